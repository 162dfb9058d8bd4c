"""Build the offline demo corpus: English prose from the documentation of the installed Python packages.

Reads docstrings and .md/.rst/.txt documents in this interpreter's site-packages, keeps clean,
deduplicated English paragraphs, and writes <out_root>/corpus.jsonl.gz plus MDS splits
<out_root>/{train,val,train_small,val_small}. No network needed. Example:

    python scripts/build_demo_corpus.py --out_root data/demo --skip_existing
"""

import argparse
import logging
import sys

from mosaicbert.demo.corpus import (DEFAULT_CHUNK_CHARS, DEFAULT_MAX_CHARS, build_demo_corpus,
                                         demo_corpus_exists)
from mosaicbert.errors import report_errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_root", default="data/demo", help="output folder (default data/demo)")
    parser.add_argument("--max_chars", type=int, default=DEFAULT_MAX_CHARS,
                        help=f"characters of prose to collect (default {DEFAULT_MAX_CHARS:,})")
    parser.add_argument("--chunk_chars", type=int, default=DEFAULT_CHUNK_CHARS,
                        help=f"max characters per MDS sample (default {DEFAULT_CHUNK_CHARS}, ~128 tokens)")
    parser.add_argument("--val_fraction", type=float, default=0.02, help="documents held out for val (default 0.02)")
    parser.add_argument("--train_small", type=int, default=10_000, help="samples in train_small (default 10000)")
    parser.add_argument("--val_small", type=int, default=1_000, help="samples in val_small (default 1000)")
    parser.add_argument("--roots", nargs="+", default=None,
                        help="folders to read instead of this interpreter's site-packages")
    parser.add_argument("--workers", type=int, default=0, help="reading processes (default: one per CPU core)")
    parser.add_argument("--overwrite", action="store_true", help="rebuild and replace an existing corpus")
    parser.add_argument("--skip_existing", action="store_true",
                        help="exit 0 without doing anything when a complete corpus is already there")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.skip_existing and not args.overwrite and demo_corpus_exists(args.out_root):
        print(f"Demo corpus {args.out_root} exists, skipping (pass --overwrite to rebuild).")
        return 0
    return report_errors(lambda: print(build_demo_corpus(
        args.out_root, max_chars=args.max_chars, chunk_chars=args.chunk_chars, val_fraction=args.val_fraction,
        train_small=args.train_small, val_small=args.val_small, roots=args.roots, workers=args.workers,
        overwrite=args.overwrite, progress=not args.quiet)))


if __name__ == "__main__":
    sys.exit(main())
