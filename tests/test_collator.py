"""MLMCollator: masking statistics, special tokens, labels, per-sample determinism."""

import numpy as np
import pytest
import torch

from mosaicbert.data.mlm_collator import MLMCollator
from mosaicbert.errors import RecipeError

MAX_LEN = 128


def make_examples(tokenizer, n, seed=0, start_idx=0, with_unk=True):
    """``n`` examples ``[CLS] ordinary... [SEP]`` of random length; some contain [UNK] / [MASK] ids."""
    rng = np.random.default_rng(seed)
    vocab_size = len(tokenizer)  # slow on fast tokenizers: once
    examples = []
    for i in range(n):
        body = rng.integers(1000, vocab_size, size=int(rng.integers(10, MAX_LEN - 1)))
        if with_unk and len(body) > 4:  # special ids inside the text must never be selected either
            body[1] = tokenizer.unk_token_id
            body[3] = tokenizer.mask_token_id
        ids = np.concatenate([[tokenizer.cls_token_id], body, [tokenizer.sep_token_id]])
        examples.append({"input_ids": ids, "sample_idx": start_idx + i})
    return examples


def collate_all(collator, examples, batch_size=256):
    """Collate in batches; return originals padded [N, MAX_LEN] and the stacked batch tensors."""
    batches = [collator(examples[i:i + batch_size]) for i in range(0, len(examples), batch_size)]
    out = {k: torch.cat([b[k] for b in batches]).numpy() if isinstance(batches[0][k], torch.Tensor)
           else np.concatenate([b[k] for b in batches]) for k in batches[0]}
    original = np.full((len(examples), MAX_LEN), collator.pad_token_id)
    for row, ex in enumerate(examples):
        original[row, :len(ex["input_ids"])] = ex["input_ids"]
    return original, out


@pytest.mark.parametrize("p", [0.15, 0.3])
def test_masking_statistics(tokenizer, p):
    collator = MLMCollator(tokenizer, mlm_probability=p, max_seq_len=MAX_LEN, seed=1)
    original, out = collate_all(collator, make_examples(tokenizer, 2000))
    special = np.isin(original, tokenizer.all_special_ids)
    eligible = (out["attention_mask"] == 1) & ~special
    selected = out["labels"] != -100
    n = eligible.sum()
    assert n > 100_000
    assert abs(selected.sum() / n - p) < 0.01

    new = out["input_ids"][selected]
    to_mask = new == tokenizer.mask_token_id
    unchanged = new == original[selected]
    to_random = ~to_mask & ~unchanged
    k = selected.sum()
    assert abs(to_mask.sum() / k - 0.8) < 0.02
    assert abs(to_random.sum() / k - 0.1) < 0.015
    assert abs(unchanged.sum() / k - 0.1) < 0.015
    # Random replacements are ordinary tokens of the vocabulary.
    assert not np.isin(new[to_random], tokenizer.all_special_ids).any()
    assert new.min() >= 0 and new.max() < len(tokenizer)


def test_specials_padding_and_labels(tokenizer):
    collator = MLMCollator(tokenizer, mlm_probability=0.3, max_seq_len=MAX_LEN, seed=0)
    original, out = collate_all(collator, make_examples(tokenizer, 600))
    selected = out["labels"] != -100
    special = np.isin(original, tokenizer.all_special_ids)  # [PAD] included
    # Special and padding positions: never selected, never changed.
    assert not selected[special].any()
    assert (out["input_ids"][special] == original[special]).all()
    pad = out["attention_mask"] == 0
    assert (out["input_ids"][pad] == tokenizer.pad_token_id).all()
    assert (out["input_ids"][:, 0] == tokenizer.cls_token_id).all()
    # labels: the original id exactly where selected, -100 everywhere else; unselected ids unchanged.
    assert (out["labels"][selected] == original[selected]).all()
    assert (out["labels"][~selected] == -100).all()
    assert (out["input_ids"][~selected] == original[~selected]).all()
    # attention_mask marks the real tokens; token_type_ids default to zeros.
    lengths = out["attention_mask"].sum(1)
    assert (original[np.arange(len(lengths)), lengths - 1] == tokenizer.sep_token_id).all()
    assert (out["token_type_ids"] == 0).all()


def test_shapes_dtypes_and_pad_to_longest(tokenizer):
    examples = make_examples(tokenizer, 8)
    fixed = MLMCollator(tokenizer, 0.15, MAX_LEN)(examples)
    tensors = {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert set(fixed) == tensors | {"row_lengths", "row_masked", "sample_idx"}
    for key in tensors:
        assert fixed[key].shape == (8, MAX_LEN) and fixed[key].dtype == torch.long
    longest = MLMCollator(tokenizer, 0.15, MAX_LEN, pad_to="longest")(examples)
    width = max(len(e["input_ids"]) for e in examples)
    assert longest["input_ids"].shape == (8, width)
    # Same masks whatever the padding.
    for key in tensors:
        assert torch.equal(fixed[key][:, :width], longest[key])
    assert fixed["row_masked"] == longest["row_masked"]


def test_mask_depends_only_on_seed_epoch_and_sample(tokenizer):
    collator = MLMCollator(tokenizer, 0.3, MAX_LEN, seed=7)
    examples = make_examples(tokenizer, 64)
    whole = collator(examples)
    # The same sample in another batch, at another position, gives the same row.
    other = collator([examples[40], examples[3], examples[17]])
    for row, src in enumerate([40, 3, 17]):
        assert torch.equal(other["input_ids"][row], whole["input_ids"][src])
        assert torch.equal(other["labels"][row], whole["labels"][src])
    # A fresh collator (another worker or rank) reproduces it too.
    again = MLMCollator(tokenizer, 0.3, MAX_LEN, seed=7)([examples[3]])
    assert torch.equal(again["labels"][0], whole["labels"][3])

    def labels_for(seed=7, epoch=None, sample_idx=3):
        ex = dict(examples[3], sample_idx=sample_idx)
        if epoch is not None:
            ex["epoch"] = epoch
        return MLMCollator(tokenizer, 0.3, MAX_LEN, seed=seed)([ex])["labels"][0]

    assert torch.equal(labels_for(epoch=0), whole["labels"][3])  # missing epoch means epoch 0
    assert not torch.equal(labels_for(sample_idx=4), whole["labels"][3])
    assert not torch.equal(labels_for(epoch=1), whole["labels"][3])
    assert not torch.equal(labels_for(seed=8), whole["labels"][3])


def test_token_type_ids_passed_through(tokenizer):
    ids = [tokenizer.cls_token_id, 2000, 2001, tokenizer.sep_token_id, 2002, tokenizer.sep_token_id]
    batch = MLMCollator(tokenizer, 0.15, 16)([{"input_ids": ids, "sample_idx": 0,
                                         "token_type_ids": [0, 0, 0, 0, 1, 1]}])
    assert batch["token_type_ids"][0].tolist() == [0, 0, 0, 0, 1, 1] + [0] * 10


def test_bad_arguments(tokenizer):
    for p in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(RecipeError, match="mlm_probability"):
            MLMCollator(tokenizer, p, MAX_LEN)
    with pytest.raises(RecipeError, match="pad_to"):
        MLMCollator(tokenizer, 0.15, MAX_LEN, pad_to="max_length")
    with pytest.raises(ValueError, match="max_seq_len"):
        MLMCollator(tokenizer, 0.15, 4)([{"input_ids": list(range(1000, 1010)), "sample_idx": 0}])


def test_host_side_row_sizes_match_the_tensors(tokenizer):
    """row_lengths / row_masked let an unpadding model size its tensors without a device sync."""
    collator = MLMCollator(tokenizer, mlm_probability=0.3, max_seq_len=MAX_LEN)
    _, out = collate_all(collator, make_examples(tokenizer, 300))
    assert out["row_lengths"].tolist() == out["attention_mask"].sum(axis=1).tolist()
    assert out["row_masked"].tolist() == (out["labels"] != -100).sum(axis=1).tolist()


def test_split_batch_keeps_host_lists_with_their_rows_and_leaves_a_short_batch_whole(recwarn):
    import torch

    from mosaicbert.data.mlm_collator import split_batch

    batch = {"input_ids": torch.arange(10).view(10, 1), "row_lengths": list(range(10)),
             "sample_idx": [100 + i for i in range(10)], "flag": True}
    pieces = split_batch(batch, 4)
    assert [len(p["input_ids"]) for p in pieces] == [4, 4, 2]
    for piece in pieces:
        assert piece["row_lengths"] == piece["input_ids"].view(-1).tolist()
        assert piece["sample_idx"] == [100 + i for i in piece["row_lengths"]]
        assert piece["flag"] is True
    short = {"input_ids": torch.zeros(3, 2), "row_lengths": [1, 2, 3]}
    assert split_batch(short, 128) == [short]
    assert not [w for w in recwarn if "Cannot split" in str(w.message)]
