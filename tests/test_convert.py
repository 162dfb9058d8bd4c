"""Text -> MDS conversion: chunking, round trips, split layout, overwrite refusal, C4 plumbing, CLIs."""

import gzip
import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from streaming import StreamingDataset

from mosaicbert.data import convert
from mosaicbert.data.convert import chunk_text, convert_c4, convert_text, is_val_document, iter_hf_texts
from mosaicbert.errors import RecipeError

from conftest import load_script

SPLITS = ("train", "val", "train_small", "val_small")


pytestmark = pytest.mark.usefixtures("fresh_shared_memory")


def read_split(folder, column="text"):
    """All samples of one MDS split folder, in stored order."""
    index = json.loads((Path(folder) / "index.json").read_text())
    if not sum(shard["samples"] for shard in index["shards"]):
        return []  # StreamingDataset refuses empty splits
    dataset = StreamingDataset(local=str(folder), batch_size=1)
    return [dataset[i][column] for i in range(dataset.num_samples)]


def sentence(i):
    return f"Document number {i} talks about topic {i * 7 % 13}, and it ends here."


def make_inputs(root: Path):
    """.txt files (one in a subfolder), a .jsonl and a .jsonl.gz; returns every document in read order."""
    (root / "sub").mkdir(parents=True)
    docs = {}
    docs["a.txt"] = ["First plain text document.\nIt has two paragraphs, the second one longer than the first."]
    docs["sub/b.txt"] = ["Second text file, in a subfolder."]
    (root / "a.txt").write_text(docs["a.txt"][0] + "\n\n")
    (root / "sub" / "b.txt").write_text("  " + docs["sub/b.txt"][0])
    docs["c.jsonl"] = [sentence(i) for i in range(40)]
    with open(root / "c.jsonl", "w") as f:
        for i, text in enumerate(docs["c.jsonl"]):
            f.write(json.dumps({"text": text, "id": i}) + "\n")
            if i == 5:
                f.write("\n")  # blank lines are skipped
    docs["d.jsonl.gz"] = [sentence(100 + i) + " Ünïcode ✓." for i in range(30)]
    with gzip.open(root / "d.jsonl.gz", "wt", encoding="utf-8") as f:
        for text in docs["d.jsonl.gz"]:
            f.write(json.dumps({"text": text}) + "\n")
    (root / "ignored.csv").write_text("not,text\n")
    order = ["a.txt", "c.jsonl", "d.jsonl.gz", "sub/b.txt"]  # sorted relative paths
    return [doc for name in order for doc in docs[name]]


# --------------------------------------------------------------------------------------------------
# chunk_text
# --------------------------------------------------------------------------------------------------

def test_chunk_text_limits_and_exactness():
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta.", "epsilon!", "zeta?", "eta"]
    for trial in range(200):
        paragraphs = [" ".join(rng.choice(words, size=int(rng.integers(1, 60)))) for _ in range(rng.integers(1, 6))]
        text = "\n".join(paragraphs)
        limit = int(rng.integers(10, 300))
        chunks = chunk_text(text, limit)
        assert all(0 < len(c) <= limit for c in chunks)
        assert all(c in text and c == c.strip() for c in chunks)
        # Nothing lost or reordered: only whitespace at chunk boundaries goes.
        assert " ".join(chunks).split() == text.split()


def test_chunk_text_prefers_paragraphs_then_sentences():
    p1, p2, p3 = "A" * 30 + ".", "Second paragraph here.", "Third one."
    assert chunk_text(f"{p1}\n{p2}\n{p3}", 60) == [f"{p1}\n{p2}", p3]
    long_paragraph = "One sentence is here. Another sentence follows! Is this the third? Yes."
    assert chunk_text(long_paragraph, 50) == ["One sentence is here. Another sentence follows!",
                                              "Is this the third? Yes."]
    assert chunk_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]  # an unbroken word is cut
    assert chunk_text("short", 100) == ["short"]
    assert chunk_text("   \n ", 10) == []


def test_val_assignment_is_a_deterministic_hash():
    docs = [sentence(i) for i in range(2000)]
    val = [d for d in docs if is_val_document(d, 0.1)]
    assert 140 < len(val) < 260
    assert val == [d for d in docs if is_val_document(d, 0.1)]
    assert not any(is_val_document(d, 0.0) for d in docs)


# --------------------------------------------------------------------------------------------------
# convert_text
# --------------------------------------------------------------------------------------------------

def test_round_trip_and_split_layout(tmp_path):
    docs = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    counts = convert_text([tmp_path / "in"], out, val_fraction=0.3, train_small=10, val_small=5, progress=False)
    for split in SPLITS:
        assert (out / split / "index.json").is_file()
    assert not list(out.glob(".*.tmp"))
    train, val = read_split(out / "train"), read_split(out / "val")
    assert train == [d for d in docs if not is_val_document(d, 0.3)]
    assert val == [d for d in docs if is_val_document(d, 0.3)]
    assert sorted(train + val) == sorted(docs)
    assert read_split(out / "train_small") == train[:10]
    assert read_split(out / "val_small") == val[:5]
    assert counts == {"train": len(train), "val": len(val), "train_small": 10, "val_small": 5}
    index = json.loads((out / "train" / "index.json").read_text())
    assert index["shards"][0]["compression"] == "zstd"
    assert index["shards"][0]["column_names"] == ["text"]


def test_chunked_round_trip_and_explicit_val(tmp_path):
    long_doc = "\n".join(" ".join(f"Sentence {p}.{s} is short." for s in range(12)) for p in range(6))
    (tmp_path / "long.txt").write_text(long_doc)
    (tmp_path / "lines.txt").write_text("line one is a document\n\nline two is another\n")
    (tmp_path / "val.jsonl").write_text(json.dumps({"body": "Validation text."}) + "\n")
    out = tmp_path / "out"
    convert_text([tmp_path / "long.txt", tmp_path / "lines.txt"], out, val_inputs=[tmp_path / "val.jsonl"],
                 text_field="body", doc_per_line=True, chunk_chars=120, progress=False)
    train = read_split(out / "train")
    assert all(len(chunk) <= 120 for chunk in train)
    # Each line of the long file is a document; its chunks reproduce it word for word.
    assert " ".join(train[:-2]).split() == long_doc.split()
    assert train[-2:] == ["line one is a document", "line two is another"]
    assert read_split(out / "val") == ["Validation text."]


def test_refuses_to_overwrite(tmp_path):
    make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    convert_text([tmp_path / "in"], out, val_fraction=0.3, progress=False)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(RecipeError) as err:
        convert_text([tmp_path / "in"], out, val_fraction=0.3, progress=False)
    assert str(out / "train") in str(err.value) and "--overwrite" in str(err.value)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing touched
    # With overwrite the splits are replaced.
    (tmp_path / "in2").mkdir()
    (tmp_path / "in2" / "new.txt").write_text("Only this document now.")
    convert_text([tmp_path / "in2"], out, val_fraction=0.0, overwrite=True, progress=False)
    assert read_split(out / "train") == ["Only this document now."]
    assert read_split(out / "val") == []


def test_files_where_the_dataset_goes_are_never_moved_or_deleted(tmp_path):
    make_inputs(tmp_path / "in")
    (tmp_path / "afile").write_text("notes")
    with pytest.raises(RecipeError, match="'.*afile' is a file, not a folder"):
        convert_text([tmp_path / "in"], tmp_path / "afile", progress=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "train").write_text("precious notes")
    for overwrite in (False, True):
        with pytest.raises(RecipeError, match="a file where a split folder goes. Nothing was written or moved"):
            convert_text([tmp_path / "in"], tmp_path / "out", overwrite=overwrite, progress=False)
    assert sorted(os.listdir(tmp_path / "out")) == ["train"]
    assert (tmp_path / "out" / "train").read_text() == "precious notes"
    assert (tmp_path / "afile").read_text() == "notes"
    # An input inside a split folder that --overwrite would replace.
    out = tmp_path / "out2"
    convert_text([tmp_path / "in"], out, val_fraction=0.3, progress=False)
    (out / "train" / "more.txt").write_text("Kept text.")
    with pytest.raises(RecipeError, match="lies inside a split folder of --out_root"):
        convert_text([tmp_path / "in", out / "train" / "more.txt"], out, overwrite=True, progress=False)
    assert (out / "train" / "more.txt").read_text() == "Kept text."


def test_bad_inputs(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        convert_text([tmp_path / "missing"], tmp_path / "out", progress=False)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"content": "x"}) + "\n")
    with pytest.raises(RecipeError, match="--text_field"):
        convert_text([tmp_path / "bad.jsonl"], tmp_path / "out", progress=False)
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(RecipeError, match="not one of"):
        convert_text([tmp_path / "data.csv"], tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "train").exists()


@pytest.mark.parametrize("name", ["docs.txt", "docs.jsonl", "docs.jsonl.gz"])
def test_a_byte_order_mark_is_not_part_of_the_text(tmp_path, name):
    """UTF-8 with a byte-order mark (as Notepad and PowerShell write it) reads like plain UTF-8."""
    texts = ["First document.", "Second document."]
    if name.endswith(".txt"):
        body = "\n".join(texts)
    else:
        body = "".join(json.dumps({"text": text}) + "\n" for text in texts)
    data = "\ufeff".encode() + body.encode()
    (tmp_path / name).write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
    convert_text([tmp_path / name], tmp_path / "out", val_fraction=0.0, doc_per_line=True, progress=False)
    assert read_split(tmp_path / "out" / "train") == texts


def numbered_texts(folder: Path, n: int = 3) -> list[str]:
    folder.mkdir()
    docs = [f"Document number {i}." for i in range(n)]
    for i, doc in enumerate(docs):
        (folder / f"{i}.txt").write_text(doc)
    return docs


def test_an_input_named_twice_is_read_once(tmp_path):
    docs = numbered_texts(tmp_path / "texts")
    texts = tmp_path / "texts"
    inputs = [texts / "2.txt", texts, texts / "0.txt", tmp_path / "texts" / ".." / "texts" / "1.txt"]
    counts = convert_text(inputs, tmp_path / "out", val_fraction=0.0, progress=False)
    assert counts["train"] == 3
    assert read_split(tmp_path / "out" / "train") == [docs[2], docs[0], docs[1]]  # first mention decides


def test_a_validation_file_among_the_training_inputs_is_refused(tmp_path):
    numbered_texts(tmp_path / "texts")
    val = tmp_path / "texts" / "0.txt"
    with pytest.raises(RecipeError) as err:
        convert_text([tmp_path / "texts"], tmp_path / "out", val_inputs=[val], progress=False)
    message = str(err.value)
    assert f"Input file {str(val)!r} is both a training input (--inputs) and a validation input (--val)" in message
    assert "Fix: " in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stop_at", range(12))
def test_an_interrupted_overwrite_loses_neither_dataset(tmp_path, monkeypatch, stop_at):
    """Ctrl-C while the new splits are moved into place: until the old ones are deleted, the old dataset is
    whole in the folder; the new one is whole throughout; the next conversion there finishes the move."""
    (tmp_path / "old.txt").write_text("\n".join(f"old document {i}." for i in range(50)))
    (tmp_path / "new.txt").write_text("\n".join(f"new document {i}." for i in range(50)))
    out = tmp_path / "out"
    options = dict(doc_per_line=True, val_fraction=0.2, train_small=30, val_small=5, progress=False)
    convert_text([tmp_path / "old.txt"], out, **options)
    old = {split: read_split(out / split) for split in SPLITS}

    # Stop before the stop_at-th move or deletion of a split folder (the swap does 4 + 4 + 4 of them).
    steps = []

    def interrupting(real):
        def step(path, *args, **kwargs):
            if Path(path).parent == out:
                steps.append(path)
                if len(steps) > stop_at:
                    raise KeyboardInterrupt
            return real(path, *args, **kwargs)
        return step

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(convert.os, "replace", interrupting(convert.os.replace))
        patch.setattr(convert.shutil, "rmtree", interrupting(convert.shutil.rmtree))
        convert_text([tmp_path / "new.txt"], out, overwrite=True, **options)

    def dataset(beside: str) -> dict:
        """The splits, each from its folder .<split>.<beside> when that is there, else <split>."""
        found = {}
        for split in SPLITS:
            folder = out / f".{split}.{beside}"
            found[split] = read_split(folder if folder.is_dir() else out / split)
        return found

    new = dataset("tmp")
    assert sorted(new["train"] + new["val"]) == sorted(f"new document {i}." for i in range(50))
    if stop_at < 8:  # nothing deleted yet
        assert dataset("old") == old
    with pytest.raises(RecipeError, match="already exists"):
        convert_text([tmp_path / "old.txt"], out, **options)
    assert {split: read_split(out / split) for split in SPLITS} == new
    assert sorted(p.name for p in out.iterdir()) == sorted(SPLITS)  # nothing left aside


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("name, content, problem", [
    ("noise.txt", random_bytes(300_000), "is not UTF-8 text"),
    ("noise.jsonl", random_bytes(20_000), "is not UTF-8 text"),
    ("utf16.txt", "Plain English prose, saved as UTF-16.\n".encode("utf-16") * 50, "is not UTF-8 text"),
    ("packed.txt.gz", gzip.compress(random_bytes(5_000), mtime=0), "is not UTF-8 text"),
    ("notgzip.jsonl.gz", b"this is not gzip data at all\n" * 10, "cannot be read (BadGzipFile"),
    ("cut.jsonl.gz", gzip.compress("".join(json.dumps({"text": sentence(i)}) + "\n" for i in range(20_000)).encode(),
                                   mtime=0)[:40_000], "cannot be read to its end (EOFError"),
], ids=["random bytes .txt", "random bytes .jsonl", "UTF-16", "gzip of random bytes", "not gzip", "cut-off gzip"])
def test_files_that_are_not_text_are_refused_and_nothing_is_left(tmp_path, name, content, problem):
    (tmp_path / name).write_bytes(content)
    out = tmp_path / "new" / "out"
    with pytest.raises(RecipeError) as err:
        convert_text([tmp_path / name], out, progress=False)
    assert f"Input file {str(tmp_path / name)!r} {problem}" in str(err.value)
    assert not (tmp_path / "new").exists(), "a refused conversion leaves no folder behind"


def test_a_bad_line_late_in_a_file_leaves_no_output_folder(tmp_path):
    lines = [json.dumps({"text": sentence(i)}) for i in range(3000)] + ["{not json"]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RecipeError, match=r"docs\.jsonl:3001 is not a JSON object"):
        convert_text([tmp_path / "docs.jsonl"], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    (tmp_path / "kept").mkdir()  # a folder that was there before stays
    with pytest.raises(RecipeError, match=r"docs\.jsonl:3001 is not a JSON object"):
        convert_text([tmp_path / "docs.jsonl"], tmp_path / "kept", progress=False)
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())


def test_latin1_prose_is_still_text_with_a_warning(tmp_path, caplog):
    """The text check must not refuse real prose in another single-byte encoding (accents undecodable),
    but it says that those characters are lost."""
    (tmp_path / "fr.txt").write_bytes(("Les élèves étudient à l'école, où ça commence tôt. " * 200).encode("latin-1"))
    (tmp_path / "en.txt").write_text("Plain English prose, in UTF-8 as it should be. " * 200)
    with caplog.at_level("WARNING"):
        counts = convert_text([tmp_path / "fr.txt", tmp_path / "en.txt"], tmp_path / "out", val_fraction=0.0,
                              progress=False)
    assert counts["train"] == 2
    warnings = [r.getMessage() for r in caplog.records if "not all UTF-8" in r.getMessage()]
    assert len(warnings) == 1 and "fr.txt" in warnings[0] and "1,600 of its first 10,200 characters" in warnings[0]


def test_convert_text_cli_on_random_bytes_exits_2_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "noise.txt").write_bytes(random_bytes(300_000))
    argv = ["--inputs", str(tmp_path / "noise.txt"), "--out_root", str(tmp_path / "out"), "--quiet"]
    assert load_script("scripts/convert_text.py").main(argv) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_pretokenized_output(tmp_path, tokenizer):
    docs = [sentence(i) for i in range(20)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    out = tmp_path / "out"
    convert_text([tmp_path / "docs.jsonl"], out, val_fraction=0.0, tokenizer=tokenizer, max_seq_len=8, progress=False)
    ids = read_split(out / "train", column="input_ids")
    assert ids[0].dtype == np.int32
    assert [list(x) for x in ids] == [tokenizer(d, truncation=True, max_length=8)["input_ids"] for d in docs]


# --------------------------------------------------------------------------------------------------
# C4 (the hub is not reachable in tests: a local Hugging Face dataset stands in)
# --------------------------------------------------------------------------------------------------

def fake_c4(split):
    """C4's two splits as a local iterable dataset (``datasets`` is in requirements.txt; a machine without
    it skips the C4 tests, and converting C4 there is a clear error: test_c4_without_datasets_is_a_clear_error)."""
    Dataset = pytest.importorskip("datasets").Dataset

    n = {"train": 40, "validation": 12}[split]
    return Dataset.from_dict({"text": [f"{split} document {i}." for i in range(n)]}).to_iterable_dataset(num_shards=2)


def test_convert_c4_layout_with_fake_source(tmp_path, monkeypatch):
    monkeypatch.setitem(convert.C4_SPLITS, "train_small", ("train", 10))
    monkeypatch.setitem(convert.C4_SPLITS, "val_small", ("validation", 4))
    out = tmp_path / "c4"
    counts = convert_c4(out, load_split=fake_c4, progress=False)
    assert counts == {"train": 40, "train_small": 10, "val": 12, "val_small": 4}
    assert read_split(out / "train") == [f"train document {i}." for i in range(40)]
    assert read_split(out / "train_small") == [f"train document {i}." for i in range(10)]
    assert read_split(out / "val_small") == [f"validation document {i}." for i in range(4)]
    with pytest.raises(RecipeError, match="--overwrite"):
        convert_c4(out, ["val_small"], load_split=fake_c4, progress=False)


def test_convert_c4_small_splits_read_only_what_they_need(tmp_path, monkeypatch):
    monkeypatch.setitem(convert.C4_SPLITS, "train_small", ("train", 5))
    monkeypatch.setitem(convert.C4_SPLITS, "val_small", ("validation", 3))
    read = {"train": 0, "validation": 0}

    def endless(split):
        for i in itertools.count():
            read[split] += 1
            yield {"text": f"{split} {i}"}

    counts = convert_c4(tmp_path / "c4", ["train_small", "val_small"], load_split=endless, progress=False)
    assert counts == {"train_small": 5, "val_small": 3}
    assert read == {"train": 5, "validation": 3}
    assert not (tmp_path / "c4" / "train").exists()


def test_c4_without_datasets_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # what importing finds where datasets is not installed
    with pytest.raises(RecipeError, match="Converting C4 needs the `datasets` package. Fix: `pip install datasets`"):
        convert.load_c4_split("validation")


def test_iter_hf_texts_with_workers_is_complete_and_deterministic():
    dataset = fake_c4("train")
    serial = list(iter_hf_texts(dataset))
    assert serial == [f"train document {i}." for i in range(40)]
    parallel = list(iter_hf_texts(dataset, num_workers=2, batch_size=4))
    assert sorted(parallel) == sorted(serial)
    assert parallel == list(iter_hf_texts(dataset, num_workers=2, batch_size=4))


# --------------------------------------------------------------------------------------------------
# CLIs
# --------------------------------------------------------------------------------------------------

def test_convert_text_cli(tmp_path, capsys):
    cli = load_script("scripts/convert_text.py")
    make_inputs(tmp_path / "in")
    argv = ["--inputs", str(tmp_path / "in"), "--out_root", str(tmp_path / "out"), "--val_fraction", "0.2",
            "--chunk_chars", "50", "--train_small", "3", "--quiet"]
    assert cli.main(argv) == 0
    assert "train_small 3 samples" in capsys.readouterr().out
    assert cli.main(argv) == 2  # existing output
    err = capsys.readouterr().err
    assert err.strip().startswith("error: Output already exists") and "--overwrite" in err
    assert cli.main(argv + ["--overwrite"]) == 0
    capsys.readouterr()
    for extra, message in [(["--max_seq_len", "64"], "--max_seq_len truncates pre-tokenized samples, so it needs "
                                                     "--tokenize"),
                           (["--tokenize", "--max_seq_len", "1"], "--max_seq_len 1 leaves no room for [CLS]")]:
        assert cli.main(argv + ["--overwrite"] + extra) == 2
        assert message in capsys.readouterr().err


def test_a_folder_input_names_the_files_it_skips(tmp_path, caplog):
    make_inputs(tmp_path / "in")
    (tmp_path / "in" / "README.md").write_text("# not an input")
    (tmp_path / "in" / "stats.json").write_text("{}")
    convert_text([tmp_path / "in"], tmp_path / "out", val_fraction=0.3, progress=False)
    assert "reading 4 text file(s); skipping 3 that are not" in caplog.text
    assert "README.md, ignored.csv, stats.json" in caplog.text


def test_convert_c4_cli_parses_arguments():
    cli = load_script("scripts/convert_c4.py")
    args = cli.parse_args(["--out_root", "x", "--splits", "train_small", "val_small", "--overwrite"])
    assert args.splits == ["train_small", "val_small"] and args.overwrite
    assert cli.parse_args(["--out_root", "x"]).splits == list(SPLITS)


def test_inputs_and_options_that_cannot_convert_are_refused_before_writing(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "cat.png").write_bytes(b"\x89PNG")
    with pytest.raises(RecipeError, match="'.*images' holds no .*txt.* files"):
        convert_text([tmp_path / "images"], tmp_path / "out", progress=False)
    (tmp_path / "a.txt").write_text("Some text that would convert.\n")
    for fraction in (1.0, -0.1):
        with pytest.raises(RecipeError, match=f"val_fraction={fraction!r} is outside \\[0, 1\\)"):
            convert_text([tmp_path / "a.txt"], tmp_path / "out", val_fraction=fraction, progress=False)
    with pytest.raises(RecipeError, match=r"Unknown C4 split\(s\) \['validation'\]. Fix: choose from train, "):
        convert_c4(tmp_path / "out", ["validation"], load_split=lambda split: [], progress=False)
    assert not (tmp_path / "out").exists()
