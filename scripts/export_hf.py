"""Export a checkpoint of this recipe as a Hugging Face model folder (see docs/export.md).

    python scripts/export_hf.py runs/demo/checkpoints/latest-rank0.pt exports/demo
    python scripts/export_hf.py s3://bucket/run/checkpoints/ep1-ba1000-rank0.pt exports/run --overwrite

The folder loads with AutoModelForMaskedLM / AutoModel / pipeline("fill-mask") (MosaicBERT needs
trust_remote_code=True: its code ships in the folder). A fine-tuned (GLUE) checkpoint is exported as a
sequence classifier. The folder also works as `pretrained_checkpoint` for pretraining and GLUE.
"""

import argparse
import logging
import sys

from mosaicbert.errors import report_errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="Composer checkpoint (local path or object-store URI) or exported folder")
    parser.add_argument("out_dir", help="folder to write (must not exist unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace out_dir if it is an earlier export (a model folder) or empty")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer name or folder (default: the checkpoint's tokenizer_name)")
    parser.add_argument("--no_check", action="store_true",
                        help="skip reloading the written folder and comparing its logits")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from mosaicbert.export import export_hf

    def run() -> None:
        out = export_hf(args.checkpoint, args.out_dir, overwrite=args.overwrite, tokenizer=args.tokenizer,
                        check=not args.no_check)
        print(f"Exported {args.checkpoint} to {out}")

    return report_errors(run)


if __name__ == "__main__":
    sys.exit(main())
