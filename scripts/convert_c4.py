"""Convert C4 (allenai/c4, config en, from the Hugging Face hub) into MDS splits for pretraining.

train_small is the first 100k train documents and val_small the first 10k validation documents (as in
the MosaicBERT recipe); train / val are all of C4 (~365M / ~365k documents; many hours, ~800 GB read).
Needs network access to huggingface.co. Example:

    python scripts/convert_c4.py --out_root data/c4 --splits train_small val_small
"""

import argparse
import functools
import sys

from mosaicbert.data.convert import C4_SPLITS, add_output_arguments, convert_c4, run_converter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_root", required=True, help="output folder; gets one subfolder per split")
    parser.add_argument("--splits", nargs="+", default=list(C4_SPLITS), choices=list(C4_SPLITS),
                        help="splits to write (default: all four)")
    parser.add_argument("--num_workers", type=int, default=0,
                        help="processes reading C4 shards in parallel (default 0: the main process)")
    add_output_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_converter(args, functools.partial(convert_c4, args.out_root, args.splits, num_workers=args.num_workers))


if __name__ == "__main__":
    sys.exit(main())
