"""Hugging Face export (src/mosaicbert/export.py, scripts/export_hf.py).

The checkpoints are real Composer checkpoints of 2-batch pretraining runs with a tiny tokenizer of
the test corpus' words (so the tests need neither the hub nor the offline bert-base-uncased files),
and hand-made fine-tuned (ComposerClassifier) checkpoints. Loading with trust_remote_code runs in a
subprocess in which ``import mosaicbert`` fails.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import WORDS, load_script

from mosaicbert.checkpoints import read_weights
from mosaicbert.composer_models import ComposerClassifier
from mosaicbert.families import FAMILIES, padded_vocab_size
from mosaicbert.config import load_config
from mosaicbert.errors import RecipeError
from mosaicbert.export import MODEL_SOURCE_FILES, export_hf
from mosaicbert.tokenizer import load_tokenizer, offline_bert_uncased_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(REPO, "src")
DEMO = os.path.join(REPO, "yamls", "demo.yaml")
TINY = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 48, "num_hidden_layers": 1}


def make_tokenizer(folder, words) -> str:
    """A WordPiece tokenizer folder whose vocabulary is the special tokens, punctuation and ``words``."""
    from transformers import AutoTokenizer

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + list(words)) + "\n")
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}, f)
    AutoTokenizer.from_pretrained(folder).save_pretrained(folder)  # adds tokenizer.json (transformers 4 and 5)
    return str(folder)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    folder = make_tokenizer(tmp_path_factory.mktemp("tokenizer"), sorted(set(WORDS)))
    assert len(load_tokenizer(folder)) % 64 != 0, "the test needs a padded vocabulary"
    return folder


@pytest.fixture(scope="module")
def trained(tiny_mds, tok_dir, tmp_path_factory):
    """family -> a Composer checkpoint of a 2-batch pretraining run."""
    from test_train import tiny_overrides

    from mosaicbert.training.trainer import build_pretraining_trainer

    paths = {}
    for family in FAMILIES:
        folder = tmp_path_factory.mktemp(f"run-{family}")
        trainer = build_pretraining_trainer(load_config(DEMO, tiny_overrides(
            tiny_mds, str(folder), family, max_duration="2ba", save_interval="2ba", eval_interval="2ba",
            tokenizer_name=tok_dir)))
        trainer.fit()
        trainer.close()
        paths[family] = str(folder / "ep0-ba2-rank0.pt")
    return paths


def reference_model(checkpoint: str):
    """The model as trained (padded vocabulary), built from the checkpoint alone."""
    weights = read_weights(checkpoint)
    family = FAMILIES[weights.model_family]
    config = family.config_class.from_dict(weights.model_config)
    cls = family.masked_lm_class
    if "classifier.weight" in weights.state_dict:
        cls, config.num_labels = family.classifier_class, weights.state_dict["classifier.weight"].shape[0]
    model = cls(config)
    model.load_state_dict(weights.state_dict, strict=True)
    return model.eval()


def padded_batch(vocab: int, seed: int = 0) -> dict:
    """Random ids with right padding (rows of 12, 7 and 3 real tokens) and random token types."""
    g = torch.Generator().manual_seed(seed)
    lengths = [12, 7, 3]
    mask = torch.tensor([[1] * n + [0] * (12 - n) for n in lengths])
    ids = torch.randint(5, vocab, (3, 12), generator=g) * mask
    types = torch.randint(0, 2, (3, 12), generator=g) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def plant(checkpoint: str, out: str, bias: float = 50.0, drop_metadata: bool = False,
          metadata: dict | None = None) -> str:
    """A copy of a Composer checkpoint with edits: a large decoder bias on the vocabulary's padding rows
    (so that an untrimmed model would suggest them), or its RecipeMetadata removed / replaced."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = state["state"]["model"]
    meta = state["state"]["callbacks"]
    if bias:
        vocab = len(load_tokenizer(meta["RecipeMetadata"]["tokenizer_name"]))
        # hf_bert stores its decoder bias twice (cls.predictions.bias and .decoder.bias, one tensor)
        for key in ("model.cls.decoder.bias", "model.cls.predictions.bias", "model.cls.predictions.decoder.bias"):
            if key in model:
                with torch.no_grad():
                    model[key][vocab:] = bias
    if drop_metadata:
        del meta["RecipeMetadata"]
    if metadata is not None:
        meta["RecipeMetadata"] = metadata
    torch.save(state, out)
    return out


def write_classifier_checkpoint(path: str, family: str, tok_dir: str, num_labels: int = 3) -> str:
    """A checkpoint as glue.py writes it: a ComposerClassifier's state under state.model, with metadata
    whose config still says 2 labels (the export must take the number from the weights)."""
    fam = FAMILIES[family]
    vocab = padded_vocab_size(len(load_tokenizer(tok_dir)))
    extra = {"max_position_embeddings": 64} if family == "hf_bert" else {}
    torch.manual_seed(0)
    model = fam.classifier_class(fam.config_class(vocab_size=vocab, num_labels=num_labels, **TINY, **extra))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # not the init, so a missed load shows
    meta_config = fam.config_class(vocab_size=vocab, **TINY, **extra).to_dict()
    state = {"state": {"model": ComposerClassifier(model, {}).state_dict(),
                       "callbacks": {"RecipeMetadata": {"model_family": family, "model_config": meta_config,
                                                        "tokenizer_name": tok_dir, "recipe": {}}}}}
    torch.save(state, path)
    return path


NO_REPO_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.modules["mosaicbert"] = None  # this repository must not be needed
    sys.path = [p for p in sys.path if p not in ("", {src!r}, {repo!r})]
    try:
        import mosaicbert  # noqa
        raise SystemExit("mosaicbert is importable")
    except ImportError:
        pass
    import torch
    from transformers import (AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification,
                              AutoTokenizer, pipeline)

    folder, inputs_file, out_file = sys.argv[1:4]
    inputs = torch.load(inputs_file)
    out = {{}}
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    out["config_class"] = type(config).__module__ + "." + type(config).__name__
    out["attention_backend"] = config.attention_backend
    mlm = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True).eval()
    out["mlm_class"] = type(mlm).__module__ + "." + type(mlm).__name__
    out["tied"] = mlm.get_output_embeddings().weight.data_ptr() == mlm.get_input_embeddings().weight.data_ptr()
    encoder = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    out["encoder_class"] = type(encoder).__name__
    classifier = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, num_labels=3)
    out["classifier_class"] = type(classifier).__name__
    with torch.no_grad():
        out["logits"] = mlm(**inputs).logits.tolist()
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
        batch = tokenizer(["the model reads text", "a checkpoint keeps the state of the run"], padding=True,
                          return_tensors="pt")
        hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out["embeddings"] = ((hidden * mask).sum(1) / mask.sum(1)).tolist()
        out["classifier_logits_shape"] = list(classifier(**batch).logits.shape)
    fill = pipeline("fill-mask", model=folder, trust_remote_code=True)
    out["fill"] = [[r["token"], r["token_str"]] for r in fill("the model [MASK] text .", top_k=5)]
    out["fill_all_ids"] = [r["token"] for r in fill("the [MASK] .", top_k=mlm.config.vocab_size)]
    json.dump(out, open(out_file, "w"))
""")


def run_without_repo(folder: str, inputs: dict, tmp_path) -> dict:
    torch.save(inputs, tmp_path / "inputs.pt")
    script = tmp_path / "load_export.py"
    script.write_text(NO_REPO_SCRIPT.format(src=SRC, repo=REPO))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(HF_MODULES_CACHE=str(tmp_path / "hf_modules"), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run([sys.executable, str(script), folder, str(tmp_path / "inputs.pt"),
                             str(tmp_path / "out.json")], capture_output=True, text=True, cwd=tmp_path, env=env,
                            stdin=subprocess.DEVNULL, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads((tmp_path / "out.json").read_text())


# ----------------------------------------------------------------------------------------------
# Exports load and compute what the checkpoint computes
# ----------------------------------------------------------------------------------------------
def test_mosaic_bert_export_matches_checkpoint_and_loads_without_this_repo(trained, tok_dir, tmp_path):
    tokenizer = load_tokenizer(tok_dir)
    n = len(tokenizer)
    # Give the vocabulary's padding rows a large bias: the model as trained would suggest them.
    checkpoint = plant(trained["mosaic_bert"], str(tmp_path / "planted.pt"))
    folder = export_hf(checkpoint, str(tmp_path / "export"))

    names = set(os.listdir(folder))
    assert {"config.json", "model.safetensors", "README.md", "tokenizer_config.json", *MODEL_SOURCE_FILES} <= names
    for name in MODEL_SOURCE_FILES:  # shipped verbatim
        with open(os.path.join(SRC, "mosaicbert", "model", name), "rb") as a, open(os.path.join(folder, name), "rb") as b:
            assert a.read() == b.read(), name
    config = json.load(open(os.path.join(folder, "config.json")))
    assert config["model_type"] == "mosaic_bert" and config["architectures"] == ["MosaicBertForMaskedLM"]
    assert config["auto_map"]["AutoModelForMaskedLM"] == "modeling_mosaic_bert.MosaicBertForMaskedLM"
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForMaskedLM",
                                       "AutoModelForSequenceClassification"}
    assert config["attention_backend"] == "auto" and config["vocab_size"] == n
    from safetensors import safe_open

    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "bert.embeddings.word_embeddings.weight" in keys and "cls.decoder.weight" not in keys  # tied: once
    assert "MosaicBERT" in open(os.path.join(folder, "README.md")).read()

    reference = reference_model(checkpoint)
    inputs = padded_batch(n)
    with torch.no_grad():
        expected = reference(**inputs).logits
    assert expected.shape[-1] == padded_vocab_size(n)
    mask_logits = expected[inputs["attention_mask"].bool()]
    assert (mask_logits.argmax(-1) >= n).all(), "the planted padding rows should win in the unexported model"

    got = run_without_repo(folder, inputs, tmp_path)
    assert got["config_class"].startswith("transformers_modules.") and got["mlm_class"].startswith("transformers_modules.")
    assert got["attention_backend"] == "auto"
    assert got["tied"] is True
    assert (got["encoder_class"], got["classifier_class"]) == ("MosaicBertModel", "MosaicBertForSequenceClassification")
    assert got["classifier_logits_shape"] == [2, 3]
    torch.testing.assert_close(torch.tensor(got["logits"]), expected[..., :n], rtol=1e-5, atol=1e-5)
    embeddings = torch.tensor(got["embeddings"])
    assert embeddings.shape == (2, 32) and torch.isfinite(embeddings).all()
    assert len(got["fill"]) == 5 and all(token < n for token, _ in got["fill"])
    assert all(token_str.strip() for _, token_str in got["fill"])
    assert sorted(got["fill_all_ids"]) == list(range(n)), "fill-mask may suggest exactly the tokenizer's tokens"


def test_hf_bert_export_is_a_stock_bert_folder(trained, tok_dir, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer, BertForMaskedLM, pipeline

    n = len(load_tokenizer(tok_dir))
    checkpoint = plant(trained["hf_bert"], str(tmp_path / "planted.pt"))
    folder = export_hf(checkpoint, str(tmp_path / "export"))
    names = set(os.listdir(folder))
    assert not names & set(MODEL_SOURCE_FILES)
    config = json.load(open(os.path.join(folder, "config.json")))
    assert config["model_type"] == "bert" and "auto_map" not in config and config["vocab_size"] == n
    assert AutoTokenizer.from_pretrained(folder).model_max_length <= config["max_position_embeddings"]

    inputs = padded_batch(n, seed=1)
    with torch.no_grad():
        expected = reference_model(checkpoint)(**inputs).logits[..., :n]
    for cls in (BertForMaskedLM, AutoModelForMaskedLM):  # no trust_remote_code
        model = cls.from_pretrained(folder).eval()
        assert type(model) is BertForMaskedLM
        assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
        with torch.no_grad():
            torch.testing.assert_close(model(**inputs).logits, expected, rtol=1e-5, atol=1e-5)
    fill = pipeline("fill-mask", model=folder)
    assert all(r["token"] < n for r in fill("the model [MASK] text .", top_k=n))


@pytest.mark.parametrize("family", ["mosaic_bert", "hf_bert"])
def test_fine_tuned_checkpoint_exports_as_a_classifier(family, tok_dir, tmp_path):
    checkpoint = write_classifier_checkpoint(str(tmp_path / "glue.pt"), family, tok_dir, num_labels=3)
    folder = export_hf(checkpoint, str(tmp_path / "export"))
    config = json.load(open(os.path.join(folder, "config.json")))
    cls = FAMILIES[family].classifier_class
    assert config["architectures"] == [cls.__name__] and len(config["id2label"]) == 3
    inputs = padded_batch(len(load_tokenizer(tok_dir)), seed=2)
    model = cls.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = reference_model(checkpoint)(**inputs).logits
        torch.testing.assert_close(model(**inputs).logits, expected, rtol=1e-5, atol=1e-5)
    assert expected.shape == (3, 3)


@pytest.mark.skipif(offline_bert_uncased_dir() is None, reason="needs the offline bert-base-uncased files")
def test_bert_base_uncased_vocabulary_is_trimmed_to_30522(tmp_path):
    """The recipe pads 30522 -> 30528; the export keeps the 30522 rows of real tokens."""
    from mosaicbert.model import MosaicBertConfig, MosaicBertForMaskedLM

    torch.manual_seed(0)
    model = MosaicBertForMaskedLM(MosaicBertConfig(vocab_size=30528, **TINY))
    with torch.no_grad():
        model.cls.decoder.bias[30522:] = 100.0
    state = {"state": {"model": {f"model.{k}": v for k, v in model.state_dict().items()},
                       "callbacks": {"RecipeMetadata": {"model_family": "mosaic_bert",
                                                        "model_config": model.config.to_dict(),
                                                        "tokenizer_name": "bert-base-uncased"}}}}
    torch.save(state, tmp_path / "ckpt.pt")
    folder = export_hf(str(tmp_path / "ckpt.pt"), str(tmp_path / "export"))
    exported = MosaicBertForMaskedLM.from_pretrained(folder).eval()
    assert exported.config.vocab_size == 30522 and exported.cls.decoder.bias.shape == (30522,)
    inputs = padded_batch(30522)
    with torch.no_grad():
        torch.testing.assert_close(exported(**inputs).logits, model.eval()(**inputs).logits[..., :30522])


# ----------------------------------------------------------------------------------------------
# An export is a starting checkpoint for the recipes
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["mosaic_bert", "hf_bert"])
def test_continued_pretraining_from_an_export_starts_from_the_same_weights(family, trained, tiny_mds, tok_dir,
                                                                           tmp_path):
    from test_train import tiny_overrides

    from mosaicbert.training.trainer import build_pretraining_trainer

    folder = export_hf(trained[family], str(tmp_path / "export"))
    n = len(load_tokenizer(tok_dir))
    source = read_weights(trained[family]).state_dict
    trainer = build_pretraining_trainer(load_config(DEMO, tiny_overrides(
        tiny_mds, str(tmp_path / "continued"), family, tokenizer_name=tok_dir,
        **{"model.pretrained_checkpoint": folder})))
    try:
        started = trainer.state.model.model.state_dict()
        assert set(started) == set(source)
        for key, value in started.items():
            want = source[key]
            if value.shape[0] == padded_vocab_size(n) and value.shape[0] != n and key not in (
                    "bert.embeddings.position_embeddings.weight",):
                # The vocabulary's padding rows (no token maps to them) are freshly initialised.
                value, want = value[:n], want[:n]
            torch.testing.assert_close(value, want, rtol=0, atol=0, msg=f"{key} differs")
        trainer.fit()  # and it trains
        assert int(trainer.state.timestamp.batch) > 0
    finally:
        trainer.close()


# ----------------------------------------------------------------------------------------------
# Bad input: clear errors, nothing written or overwritten
# ----------------------------------------------------------------------------------------------
def _truncated(src: str, dst: str) -> str:
    data = open(src, "rb").read()
    open(dst, "wb").write(data[: len(data) // 2])
    return dst


def _bad_inputs(kind: str, trained: dict, tmp_path) -> tuple[str, str]:
    if kind == "random dict":
        torch.save({"weight": torch.randn(4, 4), "step": 3}, tmp_path / "x.pt")
        return str(tmp_path / "x.pt"), "not a Composer checkpoint"
    if kind == "no metadata":
        return plant(trained["mosaic_bert"], str(tmp_path / "x.pt"), bias=0, drop_metadata=True), "RecipeMetadata"
    if kind == "other architecture":
        meta = read_weights(trained["hf_bert"]).extra
        return plant(trained["mosaic_bert"], str(tmp_path / "x.pt"), bias=0, metadata=meta), "do not fit"
    if kind == "truncated":
        return _truncated(trained["mosaic_bert"], str(tmp_path / "x.pt")), "truncated"
    if kind == "missing":
        return str(tmp_path / "nothing-here.pt"), "does not exist"
    if kind == "not a model folder":
        os.makedirs(tmp_path / "some-folder")
        return str(tmp_path / "some-folder"), "no config.json"
    if kind == "truncated export":
        folder = export_hf(trained["mosaic_bert"], str(tmp_path / "good-export"))
        _truncated(os.path.join(folder, "model.safetensors"), os.path.join(folder, "model.safetensors"))
        return folder, "truncated or damaged"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["random dict", "no metadata", "other architecture", "truncated", "missing",
                                  "not a model folder", "truncated export"])
def test_bad_checkpoints_are_clear_errors_and_write_nothing(kind, trained, tmp_path):
    checkpoint, message = _bad_inputs(kind, trained, tmp_path)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(RecipeError, match=message):
        export_hf(checkpoint, str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path)) == before, "no output and no temporary folder may be left behind"


def test_a_local_run_folder_exports_its_newest_checkpoint(trained, tmp_path):
    """Like an s3:// run folder: the save folder (or the folder above checkpoints/) means its newest checkpoint,
    which the model card names (not the latest-rank0.pt link)."""
    save_folder = os.path.dirname(trained["hf_bert"])
    assert os.path.islink(os.path.join(save_folder, "latest-rank0.pt"))
    folder = export_hf(save_folder, str(tmp_path / "export"), check=False)
    card = open(os.path.join(folder, "README.md")).read()
    assert f"source checkpoint: `{os.path.realpath(trained['hf_bert'])}`" in card
    os.makedirs(tmp_path / "run" / "checkpoints")
    os.symlink(trained["hf_bert"], tmp_path / "run" / "checkpoints" / "latest-rank0.pt")
    export_hf(str(tmp_path / "run"), str(tmp_path / "export2"), check=False)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(RecipeError, match=r"has no config.json \+ model.safetensors, and no latest-rank0.pt"):
        export_hf(str(tmp_path / "empty"), str(tmp_path / "export3"))
    assert not (tmp_path / "export3").exists()


def test_existing_output_is_never_overwritten_without_overwrite(trained, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RecipeError, match="already exists"):
        export_hf(trained["mosaic_bert"], str(out))
    # --overwrite replaces only model folders: this one has no config.json
    with pytest.raises(RecipeError, match="does not look like an exported model"):
        export_hf(trained["mosaic_bert"], str(out), overwrite=True)
    assert os.listdir(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    # nor a folder that holds the checkpoint being exported: an export re-exported onto itself looks
    # like a model folder, so only the source check stops it
    export = str(tmp_path / "export")
    export_hf(trained["mosaic_bert"], export)
    before = sorted(os.listdir(export))
    with pytest.raises(RecipeError, match="holds the checkpoint"):
        export_hf(export, export, overwrite=True)
    assert sorted(os.listdir(export)) == before
    ckpt_dir = os.path.dirname(trained["mosaic_bert"])
    with pytest.raises(RecipeError, match="holds the checkpoint"):
        export_hf(trained["mosaic_bert"], ckpt_dir, overwrite=True)
    assert os.path.isfile(trained["mosaic_bert"])
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(RecipeError, match="not a folder"):
        export_hf(trained["mosaic_bert"], str(tmp_path / "a-file"), overwrite=True)


def test_overwrite_replaces_an_earlier_export_atomically(trained, tok_dir, tmp_path):
    out = str(tmp_path / "out")
    export_hf(trained["hf_bert"], out)
    assert json.load(open(os.path.join(out, "config.json")))["model_type"] == "bert"
    # A failing export leaves the earlier one intact, even with overwrite.
    torch.save({"not": "a checkpoint"}, tmp_path / "bad.pt")
    with pytest.raises(RecipeError):
        export_hf(str(tmp_path / "bad.pt"), out, overwrite=True)
    assert json.load(open(os.path.join(out, "config.json")))["model_type"] == "bert"
    export_hf(trained["mosaic_bert"], out, overwrite=True)
    assert json.load(open(os.path.join(out, "config.json")))["model_type"] == "mosaic_bert"
    assert sorted(os.listdir(tmp_path)) == ["bad.pt", "out"], "no temporary folders left behind"
    mode = os.stat(out).st_mode & 0o777
    assert mode & 0o500 == 0o500 and os.stat(os.path.join(out, "model.safetensors")).st_mode & 0o400


@pytest.mark.parametrize("family", ["mosaic_bert", "hf_bert"])
def test_an_export_exports_again_unchanged(family, trained, tmp_path):
    from safetensors.torch import load_file

    first = export_hf(trained[family], str(tmp_path / "first"))
    second = export_hf(first, str(tmp_path / "second"))
    a, b = (load_file(os.path.join(f, "model.safetensors")) for f in (first, second))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    config = json.load(open(os.path.join(second, "config.json")))
    assert config == json.load(open(os.path.join(first, "config.json")))


def test_a_tokenizer_that_does_not_fit_the_model_is_refused(trained, tmp_path):
    big = make_tokenizer(tmp_path / "big-tokenizer", [f"word{i}" for i in range(300)])
    with pytest.raises(RecipeError, match="not the tokenizer the model was trained with"):
        export_hf(trained["mosaic_bert"], str(tmp_path / "out"), tokenizer=big)
    assert not (tmp_path / "out").exists()


def test_object_store_uris_are_fetched_with_composers_get_file(trained, tmp_path, monkeypatch):
    import shutil

    fetched = []

    def fake_get_file(path, destination, *args, **kwargs):
        fetched.append(path)
        shutil.copyfile(trained["mosaic_bert"], destination)

    monkeypatch.setattr("mosaicbert.checkpoints.get_file", fake_get_file)
    # s3:// goes through mosaicbert.object_store instead (tests/test_object_store.py, against a real server)
    folder = export_hf("gs://bucket/run/checkpoints/ep0-ba2-rank0.pt", str(tmp_path / "out"))
    assert fetched == ["gs://bucket/run/checkpoints/ep0-ba2-rank0.pt"]
    assert os.path.isfile(os.path.join(folder, "model.safetensors"))


def test_cli(trained, tmp_path, capsys):
    script = load_script("scripts/export_hf.py")
    out = str(tmp_path / "out")
    assert script.main([trained["mosaic_bert"], out]) == 0
    assert "Exported" in capsys.readouterr().out
    assert script.main([trained["mosaic_bert"], out]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and "Traceback" not in err
    assert script.main([trained["hf_bert"], out, "--overwrite"]) == 0
    assert json.load(open(os.path.join(out, "config.json")))["model_type"] == "bert"
    # An out_dir under a regular file: exit 2 with the reason (was a FileExistsError traceback), nothing made.
    (tmp_path / "a-file").write_text("x")
    under_a_file = str(tmp_path / "a-file" / "exports" / "demo")
    assert script.main([trained["mosaic_bert"], under_a_file]) == 2
    err = capsys.readouterr().err
    assert f"Output folder {under_a_file!r} cannot be made: {str(tmp_path / 'a-file')!r} is a file" in err
    assert "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["a-file", "out"]


def padded_weights(multiple: int):
    """A 256-row MosaicBERT trained with ``pad_vocab_multiple=multiple``, as export reads it."""
    from mosaicbert.checkpoints import Weights
    from mosaicbert.model import MosaicBertConfig, MosaicBertForMaskedLM

    config = MosaicBertConfig(vocab_size=256, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32, pad_vocab_multiple=multiple)
    return Weights(MosaicBertForMaskedLM(config).state_dict(), "mosaic_bert", config.to_dict())


def test_export_accepts_the_padding_of_the_models_own_vocabulary_multiple():
    """A model trained with pad_vocab_multiple 128 has up to 127 padding rows: export trims them."""
    from mosaicbert.export import build_export_model

    model, _ = build_export_model(padded_weights(128), tokenizer_size=186)
    assert model.config.vocab_size == 186


def test_the_tokenizer_rule_export_and_glue_share():
    from mosaicbert.families import tokenizer_mismatch

    assert tokenizer_mismatch(30522, 30528) is None  # the recipe's padding to 64
    assert "only 30528 embedding rows" in tokenizer_mismatch(30600, 30528)
    assert "more than a padding to a multiple of 64" in tokenizer_mismatch(200, 30528)
    assert tokenizer_mismatch(200, 30528, {"pad_vocab_multiple": 32768}) is None
    # The checkpoint's own tokenizer with a vocabulary made larger on purpose (model.config.vocab_size).
    assert tokenizer_mismatch(30522, 40000, check_padding=False) is None
    assert tokenizer_mismatch(40001, 40000, check_padding=False) is not None


def test_export_refuses_a_tokenizer_further_than_one_padding_multiple_away():
    """With the default multiple 64, the same 70-row gap means a tokenizer that does not fit."""
    from mosaicbert.export import build_export_model

    with pytest.raises(RecipeError, match="more than a padding to a multiple of 64"):
        build_export_model(padded_weights(64), tokenizer_size=186)
