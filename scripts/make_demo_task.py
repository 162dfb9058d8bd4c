"""Make the demo fine-tuning task from local text, in the GLUE TSV layout (train.tsv, dev.tsv), balanced and
deterministic. No network needed: the default source is the demo corpus of `scripts/build_demo_corpus.py`.

    python scripts/make_demo_task.py                     # topic task: data/demo/corpus.jsonl.gz -> data/demo_task
    python scripts/make_demo_task.py --kind word_order --out_dir data/word_order
    python scripts/make_demo_task.py --kind word_order --source my_text.txt --out_dir data/my_task

Kinds (see mosaicbert/demo/task.py):
  topic       is a sentence from the docs of a maths / scientific package (1) or of a web / cloud one (0)?
  word_order  is a sentence in its original word order (1), or was a span of 3-5 words shuffled (0)?
yamls/glue/demo.yaml fine-tunes the demo checkpoint on data/demo_task.
"""

import argparse
import os
import sys

from mosaicbert.errors import report_errors
from mosaicbert.demo.task import KINDS, make_demo_task


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=KINDS, default="topic", help="which task (default: topic)")
    parser.add_argument("--source", default="data/demo/corpus.jsonl.gz",
                        help="a .jsonl[.gz] file with text (and source) fields, or a .txt[.gz] file "
                             "(default: the demo corpus)")
    parser.add_argument("--out_dir", default="data/demo_task", help="output folder (default data/demo_task)")
    parser.add_argument("--n_train", type=int, default=4000, help="training rows (default 4000)")
    parser.add_argument("--n_dev", type=int, default=1000, help="dev rows (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sentence choice and shuffles (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing task")
    parser.add_argument("--skip_existing", action="store_true", help="exit 0 if the task files exist")
    args = parser.parse_args(argv)
    if args.skip_existing and not args.overwrite and all(
            os.path.isfile(os.path.join(args.out_dir, f)) for f in ("train.tsv", "dev.tsv")):
        print(f"Demo task {args.out_dir} exists, skipping (pass --overwrite to rebuild).")
        return 0
    def run() -> None:
        summary = make_demo_task(args.source, args.out_dir, kind=args.kind, n_train=args.n_train,
                                 n_dev=args.n_dev, seed=args.seed, overwrite=args.overwrite)
        print(f"Wrote {summary['kind']} task {summary['out_dir']}/train.tsv ({summary['train']} rows) and "
              f"dev.tsv ({summary['dev']} rows), balanced.")

    return report_errors(run)


if __name__ == "__main__":
    sys.exit(main())
