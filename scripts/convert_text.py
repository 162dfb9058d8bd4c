"""Convert local text files into MDS splits (train, val, train_small, val_small) for pretraining.

Inputs are files or directories of .txt or .txt.gz (one document per file, or one per line with
--doc_per_line), .jsonl or .jsonl.gz (the document in field --text_field). Examples:

    python scripts/convert_text.py --inputs my_texts/ --out_root data/my_text --chunk_chars 600
    python scripts/convert_text.py --inputs train.jsonl.gz --val val.jsonl.gz --out_root data/my_text

Then train with ``data_local: data/my_text`` (splits ``train`` / ``val``).
"""

import argparse
import functools
import sys

from mosaicbert.data.convert import (DEFAULT_TRAIN_SMALL, DEFAULT_VAL_SMALL, add_output_arguments, convert_text,
                                     run_converter)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", nargs="+", required=True, help="text files or directories (searched recursively)")
    parser.add_argument("--out_root", required=True, help="output folder; gets train/ val/ train_small/ val_small/")
    parser.add_argument("--val", nargs="+", default=None,
                        help="validation files or directories (default: a hash-based --val_fraction of --inputs)")
    parser.add_argument("--val_fraction", type=float, default=0.01,
                        help="fraction of documents put in val when --val is not given (default 0.01)")
    parser.add_argument("--text_field", default="text", help="JSON field holding the text (default 'text')")
    parser.add_argument("--doc_per_line", action="store_true", help=".txt files hold one document per line")
    parser.add_argument("--chunk_chars", type=int, default=None,
                        help="cut documents into pieces of at most this many characters at paragraph/sentence "
                             "boundaries (e.g. 600 for max_seq_len 128; default: keep documents whole)")
    parser.add_argument("--train_small", type=int, default=DEFAULT_TRAIN_SMALL,
                        help=f"samples in train_small (default {DEFAULT_TRAIN_SMALL})")
    parser.add_argument("--val_small", type=int, default=DEFAULT_VAL_SMALL,
                        help=f"samples in val_small (default {DEFAULT_VAL_SMALL})")
    add_output_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_converter(args, functools.partial(
        convert_text, args.inputs, args.out_root, val_inputs=args.val, val_fraction=args.val_fraction,
        text_field=args.text_field, doc_per_line=args.doc_per_line, chunk_chars=args.chunk_chars,
        train_small=args.train_small, val_small=args.val_small))


if __name__ == "__main__":
    sys.exit(main())
