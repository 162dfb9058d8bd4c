#!/usr/bin/env bash
# Does the hash dropout (fast_dropout) train like torch's dropout? The demo recipe (2-layer MosaicBERT on the
# demo corpus, 400 steps), compiled, with fast_dropout on and off, two seeds each, on CPU. Prints the final
# eval loss / masked accuracy of each run; metrics logs in runs/fast_dropout_quality/.
#   bash benchmarks/fast_dropout_quality_cpu.sh      (after `make demo` has built data/demo)
set -eu
out=runs/fast_dropout_quality
mkdir -p $out
export HF_HUB_OFFLINE=1
for seed in 17 18; do
  for fast in true false; do
    tag=fast_${fast}_seed${seed}
    [ -f $out/$tag.jsonl ] && continue  # finished earlier (a run's log is renamed into place only at its end)
    python main.py yamls/demo.yaml compile_config={} model.config.fast_dropout=$fast seed=$seed save_folder=null \
        progress_bar=false eval_subset_num_batches=-1 loggers.jsonl.path=$out/$tag.partial > $out/$tag.log 2>&1
    mv $out/$tag.partial $out/$tag.jsonl
  done
done
python - "$out" <<'PY'
import glob, os, sys
from mosaicbert.training.callbacks import read_jsonl
print("| run | eval loss @100/200/300/400 | masked acc @400 | train loss, last 20 batches |")
print("|---|---|---:|---:|")
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.jsonl"))):
    rows = read_jsonl(path)
    evals = [r for r in rows if "metrics/eval/LanguageCrossEntropy" in r]
    train = [r["loss/train/total"] for r in rows if "loss/train/total" in r][-20:]
    losses = "/".join(f"{r['metrics/eval/LanguageCrossEntropy']:.3f}" for r in evals)
    acc = evals[-1].get("metrics/eval/MaskedAccuracy", float("nan"))
    print(f"| {os.path.basename(path)[:-6]} | {losses} | {acc:.4f} | {sum(train) / len(train):.3f} |")
PY
