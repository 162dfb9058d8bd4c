"""glue.py's runner end to end on CPU with tiny models: fine-tuning learns, weights load exactly, MNLI -> RTE
chains, exported folders are accepted, recipes are validated up front, results and the GLUE average.

Checkpoints are tiny randomly initialised masked LMs saved by Composer (with the recipe's metadata), so
the tests need no pretraining run; the tasks are TSV files written to tmp dirs.
"""

import json
import os
import random
import time

import pytest
import torch
from composer import Trainer

from mosaicbert.checkpoints import read_weights
from mosaicbert.composer_models import ComposerMaskedLM
from mosaicbert.config import load_config, validate
from mosaicbert.demo.task import make_demo_task, shuffle_span
from mosaicbert.errors import RecipeError
from mosaicbert.families import FAMILIES, make_config
from mosaicbert.finetune.config import FinetuneConfig, check_task_configs, task_plans
from mosaicbert.finetune.encoder import Encoder, build_classifier, classifier_config, read_encoder
from mosaicbert.finetune.jobs import Job, plan_jobs
from mosaicbert.finetune.results import keep_earlier_results, markdown, summarize
from mosaicbert.finetune.runner import prepare, run_finetuning
from mosaicbert.finetune.scheduler import run_jobs, slots_for
from mosaicbert.finetune.tasks import GLUE_TASKS, get_task
from mosaicbert.model import MosaicBertForMaskedLM
from mosaicbert.training.callbacks import RecipeMetadata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 48, "num_hidden_layers": 1}
WORDS = ("the model reads text and learns to predict missing words from their context while an optimizer "
         "updates every weight after each batch of samples so that loss falls over time").split()


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine two OpenMP threads per
    process make each step many times slower. Worker processes inherit OMP_NUM_THREADS."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


def tiny_config(family: str, tokenizer):
    overrides = dict(TINY, max_position_embeddings=128) if family == "hf_bert" else dict(TINY)
    return make_config(family, tokenizer, 64, overrides)


def save_mlm_checkpoint(family: str, path, tokenizer, seed: int = 0) -> dict:
    """A Composer checkpoint of a tiny random masked LM with the recipe's metadata; returns its weights."""
    torch.manual_seed(seed)
    config = tiny_config(family, tokenizer)
    model = ComposerMaskedLM(FAMILIES[family].masked_lm_class(config))
    trainer = Trainer(model=model, device="cpu", precision="fp32", progress_bar=False,
                      callbacks=[RecipeMetadata(family, config.to_dict(), "bert-base-uncased")])
    trainer.save_checkpoint(str(path))
    trainer.close()
    return {k: v.clone() for k, v in model.model.state_dict().items()}


@pytest.fixture(scope="session")
def mlm_checkpoints(tmp_path_factory, tokenizer):
    """family -> (checkpoint path, its state dict)."""
    folder = tmp_path_factory.mktemp("mlm")
    return {family: (str(folder / f"{family}.pt"), save_mlm_checkpoint(family, folder / f"{family}.pt", tokenizer))
            for family in FAMILIES}


def recipe(tmp_path, checkpoint, **keys) -> FinetuneConfig:
    raw = {"run_name": "t", "pretrained_checkpoint": str(checkpoint), "max_seq_len": 32, "device": "cpu",
           "precision": "fp32", "results_dir": str(tmp_path / "results"), "progress_bar": False,
           "python_log_level": "warning", "default_seeds": [1], "device_eval_batch_size": 64}
    raw.update(keys)
    return validate(raw, FinetuneConfig)


def write_tsv(path, header: str, rows) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(header + "\n" + "".join("\t".join(map(str, row)) + "\n" for row in rows))


def keyword_task(folder, n_train: int = 320, n_dev: int = 160, seed: int = 0) -> dict:
    """Label 1 when 'banana' occurs in the sentence: learnable by a tiny model from scratch."""
    rng = random.Random(seed)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        rows = []
        for i in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(5, 12))]
            label = int(rng.random() < 0.4)  # imbalanced: the majority class (0) is ~60%
            if label:
                words.insert(rng.randrange(len(words) + 1), "banana")
            rows.append((" ".join(words), label))
        write_tsv(os.path.join(folder, name), "sentence\tlabel", rows)
    return {"name": "keyword", "data_dir": str(folder), "text_columns": ["sentence"], "label_column": "label",
            "num_labels": 2, "metrics": ["accuracy", "matthews"]}


# ----------------------------------------------------------------------------------------------
# Fine-tuning learns, writes results and an exportable checkpoint
# ----------------------------------------------------------------------------------------------
def test_finetuning_beats_the_majority_baseline(tmp_path, mlm_checkpoints):
    task = keyword_task(tmp_path / "keyword")
    cfg = recipe(tmp_path, mlm_checkpoints["mosaic_bert"][0], save_folder=str(tmp_path / "ckpt"), custom_tasks=[
        dict(task, lr=3.0e-3, batch_size=16, max_duration="4ep", eval_interval="2ep",
             model_config={"hidden_dropout_prob": 0.0})])
    results = run_finetuning(cfg)

    (job,) = results["jobs"]
    assert job["status"] == "ok", job
    baseline = job["majority_baseline"]["accuracy"]
    assert 0.5 < baseline < 0.75
    assert job["metrics"]["accuracy"] > baseline + 0.15, (job["metrics"], baseline)
    assert job["metrics"]["matthews"] > 0.5

    saved = json.loads((tmp_path / "results" / "results.json").read_text())
    assert saved["tasks"]["keyword"]["accuracy"]["mean"] == pytest.approx(job["metrics"]["accuracy"])
    assert saved["tasks"]["keyword"]["accuracy"]["n"] == 1
    assert saved["glue"]["glue"] is None  # no GLUE task ran
    table = (tmp_path / "results" / "results.md").read_text()
    assert "| keyword | 1 | accuracy" in table

    # The fine-tuned checkpoint carries the classifier and its metadata (what export reads).
    weights = read_weights(job["checkpoint"])
    assert weights.model_family == "mosaic_bert"
    assert len(weights.model_config["id2label"]) == 2
    assert weights.model_config["architectures"] == ["MosaicBertForSequenceClassification"]
    assert weights.state_dict["classifier.weight"].shape == (2, 32)


def test_a_new_run_keeps_the_earlier_results_under_their_time(tmp_path, mlm_checkpoints):
    """A second run in the same results_dir (e.g. a few tasks again with run_tasks) does not replace the
    earlier table: results.json and .md are renamed results-<their time> first, never over another kept pair."""
    results = tmp_path / "results"
    results.mkdir()
    when = time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, -1))
    for ext, text in ((".json", '{"earlier": 1}\n'), (".md", "earlier table\n")):
        (results / f"results{ext}").write_text(text)
        os.utime(results / f"results{ext}", (when, when))
    task = keyword_task(tmp_path / "keyword", n_train=32, n_dev=16)
    run_finetuning(recipe(tmp_path, mlm_checkpoints["mosaic_bert"][0],
                          custom_tasks=[dict(task, batch_size=16, max_duration="1ep")]))
    assert json.loads((results / "results-20260102-030405.json").read_text()) == {"earlier": 1}
    assert (results / "results-20260102-030405.md").read_text() == "earlier table\n"
    assert "keyword" in json.loads((results / "results.json").read_text())["tasks"]

    # Another earlier pair with the same time goes beside the first, not over it.
    (results / "results.json").write_text('{"earlier": 2}\n')
    os.utime(results / "results.json", (when, when))
    kept = keep_earlier_results(str(results))
    assert kept == str(results / "results-20260102-030405-2.json")
    assert json.loads(open(kept).read()) == {"earlier": 2} and not (results / "results.md").exists()
    assert json.loads((results / "results-20260102-030405.json").read_text()) == {"earlier": 1}
    assert keep_earlier_results(str(results)) is None  # nothing left to keep


# ----------------------------------------------------------------------------------------------
# Loading encoder weights
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(FAMILIES))
def test_mlm_checkpoint_loads_every_encoder_weight(tmp_path, mlm_checkpoints, family):
    path, mlm_state = mlm_checkpoints[family]
    encoder, _ = read_encoder(recipe(tmp_path, path, tasks={"rte": {}}))
    assert encoder.family == family and encoder.tokenizer_name == "bert-base-uncased"
    config = classifier_config(encoder, GLUE_TASKS["rte"], {}, 32)
    assert config.num_labels == 2 and config.id2label == {0: "entailment", 1: "not_entailment"}
    model = build_classifier(encoder, config)

    state = model.state_dict()
    encoder_keys = [k for k in state if not k.startswith(("classifier", "bert.pooler"))]
    assert len(encoder_keys) > 10
    for key in encoder_keys:
        assert torch.equal(state[key], mlm_state[key]), key
    assert "bert.pooler.dense.weight" not in mlm_state  # new for an MLM checkpoint, freshly initialised

    with pytest.raises(RecipeError, match="hiden_size.*Did you mean 'hidden_size'"):
        classifier_config(encoder, GLUE_TASKS["rte"], {"hiden_size": 64}, 32)


def test_missing_encoder_weight_is_an_error_naming_it(tmp_path, mlm_checkpoints):
    path, _ = mlm_checkpoints["mosaic_bert"]
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    dropped = next(k for k in checkpoint["state"]["model"] if ".encoder.layer.0." in k)
    del checkpoint["state"]["model"][dropped]
    broken = tmp_path / "broken.pt"
    torch.save(checkpoint, broken)

    encoder, _ = read_encoder(recipe(tmp_path, broken, tasks={"rte": {}}))
    with pytest.raises(RecipeError, match=dropped.removeprefix("model.").replace(".", r"\.")):
        build_classifier(encoder, classifier_config(encoder, GLUE_TASKS["rte"], {}, 32))


def test_a_tokenizer_that_does_not_fit_the_embedding_table_fails_before_training(tmp_path, mlm_checkpoints):
    """Token ids past the embedding table would fail only inside the first job (IndexError)."""
    from mosaicbert.tokenizer import load_tokenizer

    big = load_tokenizer("bert-base-uncased")  # a fresh copy: the session's tokenizer stays as it is
    big.add_tokens([f"newtok{i}" for i in range(100)])
    big.save_pretrained(tmp_path / "big")
    task = keyword_task(tmp_path / "keyword", n_train=64, n_dev=32)
    cfg = recipe(tmp_path, mlm_checkpoints["mosaic_bert"][0], tokenizer_name=str(tmp_path / "big"),
                 custom_tasks=[dict(task, batch_size=16, max_duration="2ba")])
    with pytest.raises(RecipeError, match=r"has 30622 tokens but the model only 30528 embedding rows.*"
                                          r"tokenizer_name"):
        prepare(cfg)
    # A much smaller tokenizer would train, on the wrong embedding rows.
    small = tmp_path / "small"
    small.mkdir()
    (small / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                                               [f"w{i}" for i in range(195)]) + "\n")
    (small / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    cfg = recipe(tmp_path, mlm_checkpoints["mosaic_bert"][0], tokenizer_name=str(small),
                 custom_tasks=[dict(task, batch_size=16, max_duration="2ba")])
    with pytest.raises(RecipeError, match=r"has 200 tokens but the model 30528 embedding rows \(more than a "
                                          r"padding to a multiple of 64\)"):
        prepare(cfg)


def test_exported_hf_folder_is_accepted(tmp_path, tokenizer):
    folder = tmp_path / "export"
    torch.manual_seed(0)
    mlm = MosaicBertForMaskedLM(tiny_config("mosaic_bert", tokenizer))
    mlm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    task = keyword_task(tmp_path / "keyword", n_train=64, n_dev=32)
    cfg = recipe(tmp_path, folder, custom_tasks=[dict(task, batch_size=16, max_duration="2ba")])
    prepared = prepare(cfg)
    encoder = prepared.context.encoder
    assert encoder.family == "mosaic_bert" and encoder.tokenizer_name == str(folder)
    model = build_classifier(encoder, classifier_config(encoder, get_task(task), {}, 32))
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, mlm.bert.embeddings.word_embeddings.weight)

    results = run_finetuning(cfg)
    assert [job["status"] for job in results["jobs"]] == ["ok"]


def test_a_hub_model_name_brings_its_tokenizer(tmp_path, tokenizer, monkeypatch):
    """read_weights downloads hub names (when the hub is reachable); the tokenizer has the same name."""
    import mosaicbert.finetune.encoder as encoder_module

    folder = tmp_path / "snapshot"  # what the download gives: config and weights, no tokenizer files
    BertForMaskedLM = FAMILIES["hf_bert"].masked_lm_class
    BertForMaskedLM(tiny_config("hf_bert", tokenizer)).save_pretrained(folder)
    monkeypatch.setattr("mosaicbert.checkpoints.snapshot_download", lambda name, **kwargs: str(folder))
    monkeypatch.setattr("mosaicbert.checkpoints.hub_reachable", lambda: True)
    asked = []
    monkeypatch.setattr(encoder_module, "load_tokenizer", lambda name: asked.append(name) or tokenizer)
    encoder, _ = read_encoder(recipe(tmp_path, "google-bert/bert-base-uncased", tasks={"rte": {}}))
    assert encoder.family == "hf_bert" and asked == ["google-bert/bert-base-uncased"]


# ----------------------------------------------------------------------------------------------
# MNLI -> RTE
# ----------------------------------------------------------------------------------------------
def fake_glue(root) -> str:
    """MNLI and RTE in the GLUE layout (the columns the reader uses), a few made-up rows each."""
    rng = random.Random(1)

    def pairs(n, labels):
        return [(i, " ".join(rng.choices(WORDS, k=6)), " ".join(rng.choices(WORDS, k=5)), labels[i % len(labels)])
                for i in range(n)]

    nli = ("entailment", "neutral", "contradiction")
    header = "index\tsentence1\tsentence2\t"
    write_tsv(os.path.join(root, "MNLI", "train.tsv"), header + "gold_label", pairs(48, nli))
    write_tsv(os.path.join(root, "MNLI", "dev_matched.tsv"), header + "gold_label", pairs(24, nli))
    write_tsv(os.path.join(root, "MNLI", "dev_mismatched.tsv"), header + "gold_label", pairs(24, nli))
    write_tsv(os.path.join(root, "RTE", "train.tsv"), header + "label", pairs(32, ("entailment", "not_entailment")))
    write_tsv(os.path.join(root, "RTE", "dev.tsv"), header + "label", pairs(16, ("entailment", "not_entailment")))
    return str(root)


def test_rte_starts_from_the_finetuned_mnli_checkpoint(tmp_path, mlm_checkpoints, monkeypatch):
    import mosaicbert.finetune.jobs as jobs_module

    glue_dir = fake_glue(tmp_path / "glue")
    save = tmp_path / "ckpt"
    tasks = {"rte": {"seeds": [1, 2], "init_from": "mnli", "batch_size": 8, "max_duration": "2ba"},
             "mnli": {"batch_size": 8, "max_duration": "3ba", "lr": 1.0e-3}}
    cfg = recipe(tmp_path, mlm_checkpoints["hf_bert"][0], data_dir=glue_dir, save_folder=str(save), tasks=tasks)
    built_from = []  # what each job's classifier was really initialised from

    def spy(encoder, config, init_checkpoint=None):
        built_from.append((config.num_labels, init_checkpoint))
        return build_classifier(encoder, config, init_checkpoint)

    monkeypatch.setattr(jobs_module, "build_classifier", spy)
    results = run_finetuning(cfg)

    jobs = {f"{job['task']}-seed{job['seed']}": job for job in results["jobs"]}
    assert list(jobs) == ["mnli-seed1", "rte-seed1", "rte-seed2"]  # the parent first
    assert all(job["status"] == "ok" for job in jobs.values()), jobs
    mnli_checkpoint = jobs["mnli-seed1"]["checkpoint"]
    assert mnli_checkpoint.startswith(str(save / "mnli" / "seed1"))
    # Both RTE seeds start from MNLI's only seed (the paper's recipe: MNLI 1 seed, RTE 5).
    assert jobs["rte-seed1"]["init_checkpoint"] == jobs["rte-seed2"]["init_checkpoint"] == mnli_checkpoint
    assert built_from == [(3, None), (2, mnli_checkpoint), (2, mnli_checkpoint)]
    assert set(jobs["mnli-seed1"]["metrics"]) == {"accuracy_matched", "accuracy_mismatched"}

    # What the RTE jobs started with: all of MNLI's fine-tuned weights but its 3-class head.
    mnli = read_weights(mnli_checkpoint)
    assert mnli.state_dict["classifier.weight"].shape == (3, 32)
    encoder, _ = read_encoder(cfg)
    rte = build_classifier(encoder, classifier_config(encoder, GLUE_TASKS["rte"], {}, 32), mnli_checkpoint)
    for key, value in rte.state_dict().items():
        if key.startswith("classifier"):
            assert value.shape[0] == 2
        else:
            assert torch.equal(value, mnli.state_dict[key]), key
    pretrained = mlm_checkpoints["hf_bert"][1]
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(mnli.state_dict[key], pretrained[key])  # MNLI training changed the encoder

    # The results: per-task scores and the GLUE average over the two tasks present.
    m = results["tasks"]
    mnli_score = (m["mnli"]["accuracy_matched"]["mean"] + m["mnli"]["accuracy_mismatched"]["mean"]) / 2
    assert results["glue"]["tasks"]["mnli"] == pytest.approx(mnli_score)
    assert m["rte"]["accuracy"]["n"] == 2
    assert results["glue"]["glue"] == pytest.approx((mnli_score + m["rte"]["accuracy"]["mean"]) / 2)
    assert "over 2 of 8 tasks" in (tmp_path / "results" / "results.md").read_text()

    # run_tasks=[rte] later: RTE starts from the MNLI checkpoint saved by this run.
    again = recipe(tmp_path, mlm_checkpoints["hf_bert"][0], data_dir=glue_dir, save_folder=str(save), tasks=tasks,
                   run_tasks=["rte"])
    planned = plan_jobs(again, task_plans(again), str(save))
    assert [job.name for job in planned] == ["rte-seed1", "rte-seed2"]
    assert planned[0].parent is None and os.path.exists(planned[0].init_checkpoint)
    # ... but not over this run's RTE checkpoints unless asked: refused before training, files untouched.
    rte_files = sorted(os.listdir(save / "rte" / "seed1"))
    with pytest.raises(RecipeError, match=r"already holds fine-tuned checkpoints of an earlier run \(rte/seed1/ep.*"
                                          r"save_overwrite=true") as err:
        prepare(again)
    assert "another run_name" not in str(err.value)  # RTE looks for MNLI's checkpoint under this folder
    assert sorted(os.listdir(save / "rte" / "seed1")) == rte_files
    prepare(recipe(tmp_path, mlm_checkpoints["hf_bert"][0], data_dir=glue_dir, save_folder=str(save), tasks=tasks,
                   run_tasks=["rte"], save_overwrite=True))
    prepare(recipe(tmp_path, mlm_checkpoints["hf_bert"][0], data_dir=glue_dir, save_folder=str(tmp_path / "new"),
                   tasks=tasks, run_tasks=["mnli"]))
    no_save = recipe(tmp_path, mlm_checkpoints["hf_bert"][0], data_dir=glue_dir, tasks=tasks, run_tasks=["rte"])
    with pytest.raises(RecipeError, match="save_folder is not set"):
        plan_jobs(no_save, task_plans(no_save), None)


def test_a_parent_with_save_false_is_kept_only_until_the_run_ends(tmp_path, mlm_checkpoints):
    """save: false keeps no checkpoint of the task under save_folder, also when another task starts from it:
    the parent saves into the run's temporary folder, which its children read and which is removed at the end."""
    task = keyword_task(tmp_path / "keyword", n_train=32, n_dev=16)
    save = tmp_path / "ckpt"
    cfg = recipe(tmp_path, mlm_checkpoints["mosaic_bert"][0], save_folder=str(save), custom_tasks=[
        dict(task, name="parent", batch_size=16, max_duration="1ba", save=False),
        dict(task, name="child", batch_size=16, max_duration="1ba", init_from="parent")])
    results = run_finetuning(cfg)

    jobs = {job["task"]: job for job in results["jobs"]}
    assert [job["status"] for job in jobs.values()] == ["ok", "ok"], jobs
    scratch = str(tmp_path / "results" / ".init-checkpoints-")
    assert jobs["child"]["init_checkpoint"].startswith(scratch)  # the child started from the parent
    assert jobs["parent"]["checkpoint"] is None  # removed with the temporary folder
    assert jobs["child"]["checkpoint"].startswith(str(save / "child" / "seed1"))
    assert os.listdir(save) == ["child"]
    assert not any(name.startswith(".init-checkpoints-") for name in os.listdir(tmp_path / "results"))


def test_a_failed_job_skips_its_dependents_and_glue_py_exits_1(tmp_path, mlm_checkpoints, monkeypatch):
    """MNLI fails while training (here: its classifier cannot be built); RTE, which starts from MNLI's
    checkpoint, is skipped; the independent task still runs; the results say so and glue.py exits 1."""
    import runpy

    import yaml

    import mosaicbert.finetune.jobs as jobs_module

    def broken_for_mnli(encoder, config, init_checkpoint=None):
        if config.num_labels == 3:
            raise RuntimeError("out of memory (simulated)")
        return build_classifier(encoder, config, init_checkpoint)

    monkeypatch.setattr(jobs_module, "build_classifier", broken_for_mnli)
    keyword = keyword_task(tmp_path / "keyword", n_train=16, n_dev=8)
    raw = {"run_name": "t", "pretrained_checkpoint": mlm_checkpoints["hf_bert"][0], "max_seq_len": 32,
           "device": "cpu", "precision": "fp32", "results_dir": str(tmp_path / "results"), "progress_bar": False,
           "python_log_level": "error", "default_seeds": [1], "device_eval_batch_size": 64,
           "data_dir": fake_glue(tmp_path / "glue"), "save_folder": str(tmp_path / "ckpt"),
           "tasks": {"mnli": {"batch_size": 8, "max_duration": "1ba"},
                     "rte": {"init_from": "mnli", "batch_size": 8, "max_duration": "1ba"}},
           "custom_tasks": [dict(keyword, batch_size=16, max_duration="1ba")]}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(raw))
    glue = runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "glue.py"))["glue"]
    assert glue(str(tmp_path / "recipe.yaml"), []) == 1

    results = json.loads((tmp_path / "results" / "results.json").read_text())
    status = {f"{job['task']}-seed{job['seed']}": (job["status"], job.get("error", "")) for job in results["jobs"]}
    assert status["mnli-seed1"][0] == "failed" and "out of memory (simulated)" in status["mnli-seed1"][1]
    assert status["rte-seed1"] == ("skipped", "mnli-seed1 did not finish")
    assert status["keyword-seed1"][0] == "ok"


def test_glue_py_under_a_multi_process_launcher_is_refused(tmp_path, mlm_checkpoints, monkeypatch):
    from composer.utils import dist

    cfg = recipe(tmp_path, mlm_checkpoints["mosaic_bert"][0], custom_tasks=[keyword_task(tmp_path / "kw", 8, 8)])
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)  # as under `composer -n 2 glue.py ...`
    with pytest.raises(RecipeError, match="not a multi-process launcher: it runs one job per GPU itself"):
        prepare(cfg)
    assert not (tmp_path / "results").exists()


def test_a_job_runs_in_a_worker_process(tmp_path, mlm_checkpoints):
    """The path parallel runs take on several GPUs: a subprocess per job (here on CPU). eval_interval 0:
    no evaluation during training, the final model is evaluated all the same."""
    task = keyword_task(tmp_path / "keyword", n_train=32, n_dev=16)
    cfg = recipe(tmp_path, mlm_checkpoints["mosaic_bert"][0],
                 custom_tasks=[dict(task, batch_size=16, max_duration="1ba", eval_interval=0)])
    prepared = prepare(cfg)
    done = []
    records = run_jobs(prepared.context, [Job("keyword", 1)], ["worker0"], str(tmp_path / "work"), done.append)
    assert records == done and records[0]["status"] == "ok", records
    assert set(records[0]["metrics"]) == {"accuracy", "matthews"}
    assert os.path.isfile(records[0]["log"])


def test_jobs_share_a_gpu_with_jobs_per_gpu(tmp_path, mlm_checkpoints):
    """jobs_per_gpu: a GPU id appears once per job it takes, and two jobs on the same GPU both run and
    both report (running jobs are told apart by their slot, not by their GPU)."""
    assert slots_for(["0"], 1) == []  # one job at a time: serial, in process
    assert slots_for(["0"], 3) == ["0", "0", "0"]
    assert slots_for(["0", "1"], 2) == ["0", "1", "0", "1"]  # spread before sharing
    task = keyword_task(tmp_path / "keyword", n_train=32, n_dev=16)
    cfg = recipe(tmp_path, mlm_checkpoints["hf_bert"][0],
                 custom_tasks=[dict(task, batch_size=16, max_duration="1ba", eval_interval=0)])
    prepared = prepare(cfg)
    done = []
    records = run_jobs(prepared.context, [Job("keyword", 1), Job("keyword", 2)], slots_for(["cpu0"], 2),
                       str(tmp_path / "work"), done.append)
    assert sorted(r["seed"] for r in records) == [1, 2] and len(done) == 2, records
    assert all(r["status"] == "ok" for r in records), records
    assert records[0]["log"] != records[1]["log"]


def test_jobs_per_gpu_must_be_positive(tmp_path, mlm_checkpoints):
    cfg = recipe(tmp_path, mlm_checkpoints["hf_bert"][0], tasks={"rte": {}}, jobs_per_gpu=0)
    with pytest.raises(RecipeError, match="jobs_per_gpu is 0; .* must be 1 or more"):
        check_task_configs(cfg, task_plans(cfg))


# ----------------------------------------------------------------------------------------------
# Validation up front
# ----------------------------------------------------------------------------------------------
CUSTOM = {"name": "mine", "data_dir": "/tmp/x", "text_columns": ["s"], "label_column": "y", "num_labels": 2}


@pytest.mark.parametrize("keys, message", [
    ({"tasks": {"mnlii": {}}}, r"Unknown task 'mnlii' in tasks\. Did you mean 'mnli'"),
    ({"tasks": {"rte": {"lrr": 1.0e-5}}}, r"Unknown key 'tasks\.rte\.lrr'\. Did you mean 'lr'\? Allowed keys here: "),
    ({"tasks": {"rte": {"learning_rate": 1.0e-5}}}, r"Unknown key 'tasks\.rte\.learning_rate'\. Did you mean 'lr'\?"),
    ({"tasks": {"rte": {"lr": "fast"}}}, r"Key 'tasks\.rte\.lr' is 'fast'"),
    ({"tasks": {"rte": {"lr": 0.0}}}, r"the learning rate must be positive"),
    ({"tasks": {"rte": {"seeds": []}}}, r"tasks\.rte\.seeds"),
    ({"tasks": {"rte": {"init_from": "qnli"}}}, r"init_from is 'qnli', which is not a task of this recipe"),
    ({"tasks": {"rte": {"init_from": "mnli"}, "mnli": {"init_from": "rte"}}}, "cycle"),
    ({"tasks": {"rte": {}}, "run_tasks": ["qnli"]}, "not among this recipe's tasks"),
    ({"tasks": {"rte": {}}, "run_tasks": ["rtee"]}, "Did you mean 'rte'"),
    ({"custom_tasks": [dict(CUSTOM, seedz=[1])]}, r"Unknown key 'custom_tasks\[0\]\.seedz'\. Did you mean 'seeds'"),
    ({"custom_tasks": [dict(CUSTOM), dict(CUSTOM)]}, "used twice"),
    ({"custom_tasks": [dict(CUSTOM, name="rte")]}, "built-in GLUE task"),
    ({"tasks": {}}, "no tasks"),
    ({"tasks": {"rte": {}}, "load_path": "x.pt"}, "load_path is not used by glue.py"),
    ({"tasks": {"rte": {"warmup": "0.1dur"}}, "scheduler": {"name": "cosine_with_warmup", "t_warmup": "0ba"}},
     None),
    ({"tasks": {"rte": {"alpha_f": 0.5}}, "scheduler": {"name": "constant_with_warmup", "t_warmup": "0ba"}},
     r"Task 'rte'.*'scheduler\.alpha_f'"),
    ({"taks": {"rte": {}}}, "Did you mean 'tasks'"),
    # Per-task times and sizes, named by their key (Composer would stop at the job's first batch).
    ({"tasks": {"rte": {"max_duration": "banana"}}}, r"tasks\.rte\.max_duration='banana' is not a time\. Use one "
                                                     r"of: 10ba \(batches\)"),
    ({"tasks": {"rte": {"eval_interval": "-1ep"}}}, r"tasks\.rte\.eval_interval='-1ep' must be zero or more"),
    ({"tasks": {"rte": {"eval_interval": 0}}}, None),  # 0: only the final model is evaluated
    ({"tasks": {"rte": {"warmup": "-1ba"}}}, r"tasks\.rte\.warmup='-1ba' must be zero or more"),
    ({"tasks": {"rte": {"warmup": "10sp"}}}, r"Task 'rte'.*t_warmup='10sp' counts samples but scheduler\.t_max='1dur' "
                                             r"\(with max_duration='3ep'\) counts batches"),
    ({"tasks": {"rte": {"batch_size": 0}}}, r"tasks\.rte\.batch_size=0 must be a positive integer"),
    ({"custom_tasks": [dict(CUSTOM, max_duration="2 epochs")]}, r"custom_tasks\[0\] \(mine\)\.max_duration='2 epochs' "
                                                               "is not a time"),
    ({"tasks": {"rte": {}}, "save_interval": "xyz"}, r"save_interval='xyz' is not a time"),
])
def test_recipe_validation(tmp_path, keys, message):
    def check():
        cfg = recipe(tmp_path, "unused.pt", **keys)
        check_task_configs(cfg, task_plans(cfg))

    if message is None:
        check()
    else:
        with pytest.raises(RecipeError, match=message):
            check()


@pytest.mark.parametrize("override, init_from, lr, model_config", [
    (None, "parent", 2.0e-5, {"classifier_dropout": 0.2}),  # an empty value keeps the custom task's keys
    ({"lr": 1.0e-4}, "parent", 1.0e-4, {"classifier_dropout": 0.2}),  # the others are kept
    ({"init_from": None}, None, 2.0e-5, {"classifier_dropout": 0.2}),  # tasks.child.init_from=null clears it
    ({"model_config": None, "lr": None}, "parent", None, None),
])
def test_tasks_keys_override_a_custom_tasks_keys_null_included(tmp_path, override, init_from, lr, model_config):
    child = dict(CUSTOM, name="child", init_from="parent", lr=2.0e-5, model_config={"classifier_dropout": 0.2})
    cfg = recipe(tmp_path, "unused.pt", custom_tasks=[dict(CUSTOM, name="parent"), child],
                 tasks={"child": override})
    h = task_plans(cfg)["child"].hparams
    assert (h.init_from, h.lr, h.model_config) == (init_from, lr, model_config)


def test_output_folders_under_a_file_fail_before_the_encoder_loads(tmp_path):
    (tmp_path / "afile").write_text("notes")
    for key in ("results_dir", "save_folder"):
        cfg = recipe(tmp_path, tmp_path / "no-such.pt", tasks={"rte": {}}, **{key: str(tmp_path / "afile" / "out")})
        with pytest.raises(RecipeError, match=rf"{key}=.*cannot be made: .*afile' is a file, not a folder"):
            prepare(cfg)  # before the checkpoint is looked at: it does not exist
    assert (tmp_path / "afile").read_text() == "notes"


def test_missing_data_fails_before_training(tmp_path, mlm_checkpoints):
    cfg = recipe(tmp_path, mlm_checkpoints["mosaic_bert"][0], data_dir=str(tmp_path / "nowhere"), tasks={"rte": {}})
    with pytest.raises(RecipeError, match="RTE/train.tsv"):
        prepare(cfg)
    with pytest.raises(RecipeError, match="does not exist"):
        prepare(recipe(tmp_path, tmp_path / "none.pt", tasks={"rte": {}}))


@pytest.mark.parametrize("name", ["mosaicbert-base", "bert-base", "demo"])
def test_shipped_recipes_are_valid(name):
    cfg = load_config(os.path.join(REPO, "yamls", "glue", f"{name}.yaml"), schema=FinetuneConfig)
    plans = task_plans(cfg)
    check_task_configs(cfg, plans)
    if name == "demo":
        assert list(plans) == ["doc_topic"] and cfg.device == "cpu"
        return
    assert list(plans)[:1] == ["mnli"] and set(plans) == set(GLUE_TASKS)
    assert cfg.max_seq_len == 256 and cfg.optimizer["betas"] == [0.9, 0.98] and cfg.optimizer["eps"] == 1.0e-6
    assert cfg.scheduler == {"name": "linear_decay_with_warmup", "t_warmup": "0.06dur", "alpha_f": 0.0}
    # task: (epochs, batch, lr, weight decay, seeds, init_from), as in the original mosaic-bert-base-uncased.yaml
    expected = {
        "mnli": ("3ep", 48, 5e-5, 5e-6, 1, None), "rte": ("3ep", 16, 1e-5, 1e-5, 5, "mnli"),
        "qqp": ("5ep", 16, 3e-5, 3e-6, 1, None), "cola": ("10ep", 32, 5e-5, 5e-6, 4, None),
        "mrpc": ("10ep", 32, 8e-5, 8e-6, 5, "mnli"), "qnli": ("10ep", 16, 1e-5, 1e-6, 1, None),
        "sst2": ("3ep", 16, 3e-5, 3e-6, 3, None), "stsb": ("10ep", 32, 3e-5, 3e-6, 5, "mnli")}
    for task, (duration, batch, lr, wd, n_seeds, parent) in expected.items():
        h = plans[task].hparams
        assert (h.max_duration, h.batch_size, h.lr, h.weight_decay, len(plans[task].seeds), h.init_from) == \
            (duration, batch, lr, wd, n_seeds, parent), task
    assert plans["stsb"].hparams.precision == "fp32" and plans["mnli"].hparams.eval_interval == "2300ba"


# ----------------------------------------------------------------------------------------------
# Results and the GLUE average
# ----------------------------------------------------------------------------------------------
def test_summary_and_glue_average():
    def job(task, seed, **metrics):
        return {"task": task, "seed": seed, "status": "ok", "metrics": metrics}

    jobs = [job("mnli", 19, accuracy_matched=0.80, accuracy_mismatched=0.82),
            job("rte", 19, accuracy=0.60), job("rte", 20, accuracy=0.70),
            job("stsb", 19, pearson=0.90, spearman=0.88),
            job("mrpc", 19, accuracy=0.80, f1=0.90),
            job("mine", 19, accuracy=0.99),
            {"task": "cola", "seed": 19, "status": "failed", "error": "boom"}]
    summary = summarize(jobs, ["mnli", "rte", "stsb", "mrpc", "cola", "mine"])
    assert summary["tasks"]["rte"]["accuracy"] == pytest.approx({"mean": 0.65, "std": 0.0707107, "n": 2}, rel=1e-5)
    assert summary["glue"]["tasks"] == pytest.approx({"mnli": 0.81, "rte": 0.65, "mrpc": 0.85, "stsb": 0.88})
    assert summary["glue"]["glue"] == pytest.approx((0.81 + 0.65 + 0.85 + 0.88) / 4)
    assert "cola" in summary["glue"]["missing"] and "cola" not in summary["tasks"]
    assert summary["failed"][0]["task"] == "cola"
    assert summarize(jobs, ["stsb"], stsb_metric="mean")["glue"]["tasks"]["stsb"] == pytest.approx(0.89)

    table = markdown(summary)
    assert "| rte | 2 | accuracy 65.00 ± 7.07 |" in table
    assert "**GLUE average** | | over 4 of 8 tasks | | **79.75**" in table
    assert "| mine | 1 | accuracy 99.00 | – | – (not GLUE) |" in table
    assert "cola seed 19: failed (boom)" in table


# ----------------------------------------------------------------------------------------------
# The demo task
# ----------------------------------------------------------------------------------------------
def test_demo_tasks_are_balanced_deterministic_and_honest(tmp_path):
    rng = random.Random(0)

    def sentence():
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize() + "."

    corpus = tmp_path / "corpus.jsonl"  # the demo corpus' format: text + source path in site-packages
    with open(corpus, "w") as f:
        for i in range(250):
            package = ("sympy", "numpy", "azure", "requests", "rich")[i % 5]  # rich is in neither topic
            f.write(json.dumps({"text": " ".join(sentence() for _ in range(3)), "source": f"{package}/m{i}.py"}) + "\n")

    for kind in ("topic", "word_order"):
        summary = make_demo_task(corpus, tmp_path / kind, kind=kind, n_train=60, n_dev=20, seed=3)
        assert (summary["train"], summary["dev"]) == (60, 20)
        make_demo_task(corpus, tmp_path / f"{kind}-again", kind=kind, n_train=60, n_dev=20, seed=3)
        for name in ("train.tsv", "dev.tsv"):
            assert (tmp_path / kind / name).read_bytes() == (tmp_path / f"{kind}-again" / name).read_bytes()
        lines = (tmp_path / kind / "dev.tsv").read_text().splitlines()
        assert lines[0] == "sentence\tlabel"
        labels = [int(line.split("\t")[1]) for line in lines[1:]]
        assert labels.count(0) == labels.count(1) == 10
    train = {line.split("\t")[0] for line in (tmp_path / "topic" / "train.tsv").read_text().splitlines()[1:]}
    dev = {line.split("\t")[0] for line in (tmp_path / "topic" / "dev.tsv").read_text().splitlines()[1:]}
    assert not train & dev
    with pytest.raises(RecipeError, match="--overwrite"):
        make_demo_task(corpus, tmp_path / "topic", n_train=60, n_dev=20)
    plain = tmp_path / "plain.txt"
    plain.write_text("\n".join(sentence() for _ in range(50)))
    with pytest.raises(RecipeError, match="--kind word_order"):
        make_demo_task(plain, tmp_path / "plain", kind="topic", n_train=10, n_dev=4)

    sentence = "The optimizer updates every weight after each batch of samples."
    shuffled = shuffle_span(sentence, random.Random(0))
    assert shuffled != sentence and shuffled.startswith("The ") and shuffled.endswith(".")
    assert sorted(shuffled[:-1].split()) == sorted(sentence[:-1].split())


@pytest.mark.parametrize("multiple, padded", [(64, 30528), (128, 30592)])
def test_classifier_config_pads_the_vocabulary_to_the_encoders_multiple(multiple, padded):
    """An export trims the vocabulary to the tokenizer; fine-tuning pads it back to the multiple the model
    was trained with (its pad_vocab_multiple), not always to 64."""
    config = {"model_type": "mosaic_bert", "vocab_size": 30522, "pad_vocab_multiple": multiple}
    encoder = Encoder(path="export", family="mosaic_bert", config=config, tokenizer_name="bert-base-uncased",
                      weights=None)
    assert classifier_config(encoder, GLUE_TASKS["rte"], {}, 128).vocab_size == padded
