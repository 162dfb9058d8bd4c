"""StreamingTextDataset on text and pre-tokenized MDS; build_text_dataloader batches, resumption, errors."""

import gc
import inspect
import json
import re
import typing

import numpy as np
import pytest
import torch
from composer.core import DataSpec
from composer.utils import reproducibility
from streaming import MDSWriter

from mosaicbert.data.convert import convert_text
from mosaicbert.data.text_dataset import StreamingTextDataset, build_text_dataloader
from mosaicbert.errors import RecipeError

SEQ = 32


pytestmark = pytest.mark.usefixtures("fresh_shared_memory")


def texts(n=100):
    return [f"Sample {i} says that the quick brown fox jumps over {i % 7} lazy dogs. " * (1 + i % 5)
            for i in range(n)]


@pytest.fixture
def text_mds(tmp_path):
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts()))
    convert_text([tmp_path / "docs.jsonl"], tmp_path / "mds", val_fraction=0.2, train_small=20, val_small=5,
                 progress=False)
    return tmp_path / "mds"


def write_tokenized(folder, rows, encoding):
    columns = {"input_ids": "ndarray:int32" if encoding == "ndarray" else "bytes"}
    with MDSWriter(out=str(folder), columns=columns, compression="zstd") as writer:
        for ids in rows:
            ids = np.asarray(ids, dtype=np.int32)
            writer.write({"input_ids": ids if encoding == "ndarray" else ids.tobytes()})


def test_text_samples(tokenizer, text_mds):
    dataset = StreamingTextDataset(tokenizer, SEQ, local=str(text_mds), split="train", batch_size=4)
    originals = [t.strip() for t in texts()]
    for idx in (0, 1, dataset.num_samples - 1):
        item = dataset[idx]
        assert item["sample_idx"] == idx and "epoch" not in item  # random access: no epoch
        ids = item["input_ids"]
        assert ids.dtype == np.int64 and len(ids) <= SEQ
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        text = dataset.get_item(idx)["text"]
        assert text in originals
        assert ids.tolist() == tokenizer(text, truncation=True, max_length=SEQ)["input_ids"]


def test_long_text_shortcut_matches_full_tokenization(tokenizer, text_mds):
    dataset = StreamingTextDataset(tokenizer, 16, local=str(text_mds), split="val")
    long_text = " ".join(f"word{i} is here, and there." for i in range(2000))
    expected = tokenizer(long_text, truncation=True, max_length=16)["input_ids"]
    assert dataset.tokenize(long_text).tolist() == expected
    # Long text made of very long "words": the character cut gives too few tokens, the full text is used.
    odd = " ".join(["x" * 150] * 40)
    assert dataset.tokenize(odd).tolist() == tokenizer(odd, truncation=True, max_length=16)["input_ids"]


@pytest.mark.parametrize("encoding", ["ndarray", "bytes"])
def test_pretokenized_samples(tokenizer, tmp_path, encoding):
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    rows = [[cls, 2000, 2001, sep], [cls] + list(range(3000, 3100)) + [sep], [cls] + list(range(4000, 4050))]
    write_tokenized(tmp_path / "pretokenized", rows, encoding)
    dataset = StreamingTextDataset(tokenizer, 10, local=str(tmp_path / "pretokenized"))
    assert dataset[0]["input_ids"].tolist() == rows[0]
    long = dataset[1]["input_ids"]
    assert long.dtype == np.int64 and long.tolist() == [cls] + list(range(3000, 3008)) + [sep]  # keeps [SEP]
    assert dataset[2]["input_ids"].tolist() == rows[2][:10]  # no final [SEP]: plain cut


def test_epoch_is_reported_while_iterating(tokenizer, text_mds):
    dataset = StreamingTextDataset(tokenizer, SEQ, local=str(text_mds), split="val_small", batch_size=1)
    first_epoch = list(dataset)
    second_epoch = list(dataset)
    assert {item["epoch"] for item in first_epoch} == {0}
    assert {item["epoch"] for item in second_epoch} == {1}
    assert sorted(item["sample_idx"] for item in first_epoch) == list(range(5))


def test_signature_for_config_validation():
    signature = inspect.signature(build_text_dataloader)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in signature.parameters.values())
    hints = typing.get_type_hints(build_text_dataloader)
    assert hints["max_seq_len"] is int and hints["mlm_probability"] is float and hints["pad_to"] is str
    assert hints["remote"] == (str | None) and hints["prefetch_factor"] == (int | None)
    assert hints["return"] is DataSpec
    required = [name for name, p in signature.parameters.items() if p.default is inspect.Parameter.empty]
    assert required == ["tokenizer", "max_seq_len", "device_batch_size", "local"]


def test_dataloader_batches(tokenizer, text_mds):
    spec = build_text_dataloader(tokenizer=tokenizer, max_seq_len=SEQ, device_batch_size=8, local=str(text_mds),
                                 split="train", num_workers=0, mlm_probability=0.3)
    assert isinstance(spec, DataSpec)
    batches = list(spec.dataloader)
    n_train = spec.dataloader.dataset.num_samples
    assert len(batches) == n_train // 8  # drop_last
    for batch in batches:
        assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels", "row_lengths", "row_masked", "sample_idx"}
        assert all(v.shape == (8, SEQ) and v.dtype == torch.long for v in batch.values() if isinstance(v, torch.Tensor))
        assert len(batch["row_lengths"]) == len(batch["row_masked"]) == 8
        assert spec.get_num_tokens_in_batch(batch) == int(batch["attention_mask"].sum())
        assert spec.get_num_samples_in_batch(batch) == 8
    labels = torch.cat([b["labels"] for b in batches])
    mask = torch.cat([b["attention_mask"] for b in batches])
    assert 0.15 < (labels != -100).sum() / mask.sum() < 0.35

    longest = build_text_dataloader(tokenizer=tokenizer, max_seq_len=SEQ, device_batch_size=4, local=str(text_mds),
                                    split="val", num_workers=0, pad_to="longest", drop_last=False)
    for batch in longest.dataloader:  # each batch is as wide as its longest sample
        assert batch["input_ids"].shape[1] == int(batch["attention_mask"].sum(1).max()) <= SEQ


def test_same_batches_with_workers_and_exact_resumption(tokenizer, text_mds):
    common = dict(tokenizer=tokenizer, max_seq_len=SEQ, device_batch_size=4, local=str(text_mds), split="train",
                  shuffle=True, mlm_probability=0.3)

    def same_batches(ours, theirs):
        """Batch by batch, in order: the same samples, ids, masks and host-side sizes."""
        assert len(ours) == len(theirs) > 0
        for a, b in zip(ours, theirs):
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)

    serial = build_text_dataloader(**common, num_workers=0)
    reference = list(serial.dataloader)
    # Resume mid-epoch from the loader's state: the remaining batches come back identical.
    partial = iter(serial.dataloader)
    for _ in range(3):  # consume three batches, then snapshot the position
        next(partial)
    state = serial.dataloader.state_dict()
    assert state["sample_in_epoch"] == 12 and state["epoch"] == 1
    rest_reference = list(partial)
    del partial, serial
    gc.collect()
    resumed = build_text_dataloader(**common, num_workers=0)
    resumed.dataloader.load_state_dict(state)
    rest = list(resumed.dataloader)
    same_batches(rest, rest_reference)
    del resumed
    gc.collect()
    # Two worker processes serve the same batches, in the same order, with the same masks (epoch 0).
    parallel = build_text_dataloader(**common, num_workers=2, persistent_workers=False)
    same_batches(list(parallel.dataloader), reference)


def test_iterating_leaves_the_global_torch_rng_alone(tokenizer, text_mds):
    # Composer restores the global RNG (dropout) from checkpoints; building a dataloader iterator must
    # not draw from it, or a resumed run would drift from an uninterrupted one.
    spec = build_text_dataloader(tokenizer=tokenizer, max_seq_len=SEQ, device_batch_size=4, local=str(text_mds),
                                 split="val", num_workers=0)
    before = torch.get_rng_state()
    list(spec.dataloader)
    list(spec.dataloader)
    assert torch.equal(before, torch.get_rng_state())


def test_unset_seeds_follow_the_run_seed(tokenizer, text_mds):
    """Without shuffle_seed / mask_seed a loader takes its order and masks from the run's seed (the recipe
    passes its ``seed``): the same seed gives the same batches, another seed another order and other masks.
    Values set in the section still win."""
    def batches(run_seed, shuffle, **kwargs):
        reproducibility.seed_all(0)  # the global RNG plays no part
        spec = loader(tokenizer, text_mds, shuffle=shuffle, mlm_probability=0.3, run_seed=run_seed, **kwargs)
        found = list(spec.dataloader)
        del spec
        gc.collect()
        return [b["sample_idx"] for b in found], torch.cat([b["labels"] for b in found])

    order_1, _ = batches(1, shuffle=True)
    order_2, _ = batches(2, shuffle=True)
    assert order_1 == batches(1, shuffle=True)[0] and order_1 != order_2
    _, masks_1 = batches(1, shuffle=False)
    _, masks_2 = batches(2, shuffle=False)
    assert torch.equal(masks_1, batches(1, shuffle=False)[1]) and not torch.equal(masks_1, masks_2)
    # Fixed (evaluation) masks are the same whatever the run's seed: runs evaluate on the same tokens.
    assert torch.equal(batches(1, shuffle=False, fixed_masks=True)[1], batches(2, shuffle=False, fixed_masks=True)[1])
    pinned = dict(shuffle_seed=5, mask_seed=5)
    assert batches(1, shuffle=True, **pinned)[0] == batches(2, shuffle=True, **pinned)[0]
    assert torch.equal(batches(1, shuffle=False, **pinned)[1], batches(2, shuffle=False, **pinned)[1])


def test_missing_data_errors(tokenizer, tmp_path, text_mds):
    kwargs = dict(tokenizer=tokenizer, max_seq_len=SEQ, device_batch_size=4)
    missing = tmp_path / "nowhere"
    with pytest.raises(RecipeError) as err:
        build_text_dataloader(**kwargs, local=str(missing), split="train")
    message = str(err.value)
    assert str(missing) in message
    assert "scripts/convert_text.py" in message and "scripts/convert_c4.py" in message and "make demo" in message
    with pytest.raises(RecipeError, match="no MDS index") as err:
        build_text_dataloader(**kwargs, local=str(text_mds), split="validation")
    assert "train, train_small, val, val_small" in str(err.value)  # lists what is there
    # Remotes streaming cannot read fail here, not at the first download.
    with pytest.raises(RecipeError, match=r"remote='s4://bucket/c4': streaming cannot read 's4://' remotes\. "
                                          r"Use one of .*s3://"):
        build_text_dataloader(**kwargs, local=str(tmp_path / "cache"), remote="s4://bucket/c4", split="train")
    with pytest.raises(RecipeError, match=r"remote='.*nowhere' is a local path without .*train/index\.json"):
        build_text_dataloader(**kwargs, local=str(tmp_path / "cache"), remote=str(missing), split="train")
    with pytest.raises(RecipeError, match="mlm_probability"):
        build_text_dataloader(**kwargs, local=str(text_mds), split="train", mlm_probability=1.0)
    with pytest.raises(RecipeError, match="pad_to"):
        build_text_dataloader(**kwargs, local=str(text_mds), split="train", pad_to="max_length")


def test_empty_split_error(tokenizer, tmp_path):
    (tmp_path / "one.txt").write_text("Just one document.")
    convert_text([tmp_path / "one.txt"], tmp_path / "mds", val_fraction=0.0, progress=False)
    with pytest.raises(RecipeError, match="is empty"):
        build_text_dataloader(tokenizer=tokenizer, max_seq_len=SEQ, device_batch_size=1, local=str(tmp_path / "mds"),
                              split="val")


def test_a_split_smaller_than_one_batch_is_refused_where_drop_last_would_leave_no_batch(tokenizer, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"{i}.txt").write_text(f"Document number {i} is short.")
    convert_text([docs], tmp_path / "mds", val_fraction=0.0, progress=False)
    kwargs = dict(tokenizer=tokenizer, max_seq_len=SEQ, local=str(tmp_path / "mds"), split="train", num_workers=0)
    with pytest.raises(RecipeError, match=re.escape("holds 3 sample(s), 3 per process: fewer than one batch of 4")):
        build_text_dataloader(device_batch_size=4, **kwargs)
    assert len(build_text_dataloader(device_batch_size=3, **kwargs).dataloader) == 1
    assert len(build_text_dataloader(device_batch_size=4, drop_last=False, **kwargs).dataloader) == 1


# ----------------------------------------------------------------------------------------------------
# Shards that do not match their index.json: named before training, never a hang
# ----------------------------------------------------------------------------------------------------
def shard_paths(split_folder):
    """(compressed shard, its decompressed copy) of a one-shard split."""
    index = json.loads((split_folder / "index.json").read_text())["shards"][0]
    return split_folder / index["zip_data"]["basename"], split_folder / index["raw_data"]["basename"]


def cut(path, keep: float = 0.5) -> int:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return len(data)


def decompressed(tokenizer, folder, split="train"):
    """Read a split once, so streaming leaves the decompressed copy of each shard beside it."""
    list(StreamingTextDataset(tokenizer, SEQ, local=str(folder), split=split, batch_size=4))
    gc.collect()


def loader(tokenizer, local, split="train", **kwargs):
    return build_text_dataloader(tokenizer=tokenizer, max_seq_len=SEQ, device_batch_size=4, local=str(local),
                                 split=split, num_workers=0, **kwargs)


def test_a_truncated_shard_is_named_before_training(tokenizer, text_mds):
    packed, raw = shard_paths(text_mds / "train")
    raw.unlink(missing_ok=True)
    size = cut(packed)
    with pytest.raises(RecipeError) as err:
        loader(tokenizer, text_mds)
    message = str(err.value)
    assert f"{packed} is {size // 2:,} bytes but index.json records {size:,}: the file was cut off" in message
    assert "--overwrite (scripts/convert_text.py" in message


def test_a_truncated_shard_beside_its_decompressed_copy_is_noticed(tokenizer, text_mds):
    decompressed(tokenizer, text_mds)
    packed, raw = shard_paths(text_mds / "train")
    assert raw.is_file()  # streaming would read this copy and never look at the damaged file
    cut(packed)
    with pytest.raises(RecipeError, match=f"{packed} is .* bytes but index.json records"):
        loader(tokenizer, text_mds)


def test_a_cut_off_decompressed_copy_is_named_with_its_fix(tokenizer, text_mds):
    decompressed(tokenizer, text_mds)
    packed, raw = shard_paths(text_mds / "train")
    cut(raw)  # e.g. a full disk while streaming decompressed it
    with pytest.raises(RecipeError) as err:
        loader(tokenizer, text_mds)
    assert f"Fix: delete {raw} (streaming's decompressed copy of {packed.name}" in str(err.value)
    raw.unlink()
    assert len(list(loader(tokenizer, text_mds).dataloader)) > 0  # decompressed again from the intact file


def test_a_missing_shard_and_an_unreadable_index_are_named(tokenizer, text_mds):
    packed, raw = shard_paths(text_mds / "train")
    packed.unlink()
    raw.unlink(missing_ok=True)
    with pytest.raises(RecipeError, match=f"lacks shard {raw.name} / {packed.name}, which its index.json lists"):
        loader(tokenizer, text_mds)
    (text_mds / "val" / "index.json").write_text('{"shards": [')
    with pytest.raises(RecipeError, match=r"The MDS index .*val/index.json' cannot be read \(JSONDecodeError"):
        loader(tokenizer, text_mds, split="val")


@pytest.mark.parametrize("workers", [0, 1])
def test_a_damaged_remote_shard_ends_the_epoch_with_a_clear_error(tokenizer, text_mds, tmp_path, workers):
    """Shards of a remote dataset are downloaded and decompressed in streaming's threads during training;
    a damaged one is a RecipeError naming it (streaming itself stopped with "Background thread failed",
    and processes waiting for the shard could wait forever)."""
    packed, raw = shard_paths(text_mds / "train")
    raw.unlink(missing_ok=True)
    cut(packed)
    cache = tmp_path / "cache"
    spec = build_text_dataloader(tokenizer=tokenizer, max_seq_len=SEQ, device_batch_size=4, local=str(cache),
                                 remote=str(text_mds), split="train", num_workers=workers)
    with pytest.raises(RecipeError) as err:
        list(spec.dataloader)
    message = str(err.value)
    assert message.startswith(f"Shard {cache / 'train' / packed.name} could not be prepared (")
    assert f"so that it is downloaded from {text_mds} again" in message
    assert "Traceback" not in message  # a worker's error arrives as the worker's own message
    del spec
    gc.collect()
    # The next start names the cached copy before training.
    with pytest.raises(RecipeError, match=f"{cache / 'train' / packed.name} is .* bytes but index.json records"):
        loader(tokenizer, cache, remote=str(text_mds))


def test_ids_from_another_tokenizer_are_named(tokenizer, tmp_path):
    """Data tokenized with a larger vocabulary than the recipe's tokenizer (the collator would fail with an
    IndexError deep in masking)."""
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    write_tokenized(tmp_path / "bigger", [[cls, 2000, sep], [cls, len(tokenizer) + 5, sep]], "ndarray")
    dataset = StreamingTextDataset(tokenizer, 10, local=str(tmp_path / "bigger"))
    assert dataset[0]["input_ids"].tolist() == [cls, 2000, sep]
    with pytest.raises(RecipeError, match=rf"MDS sample 1 .* holds token id {len(tokenizer) + 5}, outside the "
                                          rf"tokenizer's {len(tokenizer)} tokens.*--tokenize --tokenizer"):
        dataset[1]


@pytest.mark.parametrize("compression, fix", [(None, "Fix: rebuild the split"),
                                              ("zstd", "Fix: delete it: it is decompressed again from "
                                                       "shard.00000.mds.zstd")])
def test_a_shard_damaged_at_its_recorded_size_is_named_when_read(tokenizer, tmp_path, compression, fix):
    """Bytes changed in place (the size check before training cannot see it): the sample that fails names the
    shard and the fix instead of streaming's 'Relative sample index ... is not present'."""
    with MDSWriter(out=str(tmp_path / "mds" / "train"), columns={"text": "str"}, compression=compression) as writer:
        for i in range(20):
            writer.write({"text": f"document number {i} " * 5})
    dataset = StreamingTextDataset(tokenizer, SEQ, local=str(tmp_path / "mds"), split="train")
    assert len(dataset[3]["input_ids"]) > 2  # read (and, compressed, decompressed) while whole
    shard = tmp_path / "mds" / "train" / "shard.00000.mds"
    data = bytearray(shard.read_bytes())
    data[8:24] = b"\xff" * 16  # the start of the sample offsets
    shard.write_bytes(bytes(data))
    dataset = StreamingTextDataset(tokenizer, SEQ, local=str(tmp_path / "mds"), split="train")
    with pytest.raises(RecipeError, match=rf"Sample 2 could not be read from shard .*shard\.00000\.mds "
                                          rf"\(IndexError: .*\): the file has the size its index records but not "
                                          rf"its content .*{fix}"):
        dataset[2]
    with pytest.raises(IndexError):
        dataset[len(dataset)]  # past the end stays an IndexError


def test_a_dataset_without_text_or_input_ids_is_named(tokenizer, tmp_path):
    with MDSWriter(out=str(tmp_path / "other" / "train"), columns={"caption": "str"}, compression="zstd") as writer:
        for i in range(4):
            writer.write({"caption": f"picture {i}"})
    dataset = StreamingTextDataset(tokenizer, SEQ, local=str(tmp_path / "other"), split="train", batch_size=1)
    with pytest.raises(RecipeError, match=r"MDS sample 0 has columns \['caption'\] but neither 'text' nor "
                                          "'input_ids'.*scripts/convert_text.py"):
        dataset[0]


def test_a_tokenizer_without_a_mask_token_is_refused(tokenizer):
    from mosaicbert.data.mlm_collator import MLMCollator

    class NoMask:
        name_or_path, mask_token_id, pad_token_id = "gpt2-like", None, 0

    with pytest.raises(RecipeError, match="'gpt2-like' has no mask or pad token"):
        MLMCollator(NoMask(), mlm_probability=0.3, max_seq_len=SEQ)
