"""Convert C4 (allenai/c4, config en, from the Hugging Face hub) into MDS splits for pretraining.

train_small is the first 100k train documents and val_small the first 10k validation documents (as in
the MosaicBERT recipe); train / val are all of C4 (~365M / ~365k documents; many hours, ~800 GB read).
Needs network access to huggingface.co. Example:

    python scripts/convert_c4.py --out_root data/c4 --splits train_small val_small
"""

import argparse
import logging
import sys

from mosaicbert.data.convert import C4_SPLITS, convert_c4
from mosaicbert.errors import RecipeError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_root", required=True, help="output folder; gets one subfolder per split")
    parser.add_argument("--splits", nargs="+", default=list(C4_SPLITS), choices=list(C4_SPLITS),
                        help="splits to write (default: all four)")
    parser.add_argument("--num_workers", type=int, default=0,
                        help="processes reading C4 shards in parallel (default 0: the main process)")
    parser.add_argument("--tokenize", action="store_true",
                        help="store pre-tokenized input_ids (int32) instead of text")
    parser.add_argument("--tokenizer", default="bert-base-uncased", help="tokenizer for --tokenize")
    parser.add_argument("--max_seq_len", type=int, default=None, help="with --tokenize: truncate to this many tokens")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output splits")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        tokenizer = None
        if args.tokenize:
            from mosaicbert.tokenizer import load_tokenizer

            tokenizer = load_tokenizer(args.tokenizer)
        counts = convert_c4(args.out_root, args.splits, overwrite=args.overwrite, num_workers=args.num_workers,
                            tokenizer=tokenizer, max_seq_len=args.max_seq_len, progress=not args.quiet)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Wrote {args.out_root}: " + ", ".join(f"{name} {n:,} samples" for name, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
