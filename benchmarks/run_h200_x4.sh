#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md and docs/time_to_quality.md, as run on a 4 x H200 machine
# (the device tool's nvidia-h200-x4) in two calls of at most 10 minutes each:
#   bash benchmarks/run_h200_x4.sh phase1 $OUT   # GPUs 0,1: scripts/pareto.py (left running in the background)
#                                                # GPU 2: benchmark.py on dataset batches at microbatch 128 / 256
#                                                # GPU 3: main.py's Composer throughput at the same shapes
#   bash benchmarks/run_h200_x4.sh phase2 $OUT   # waits for pareto.py, then scripts/scaling.py on 1, 2, 4 GPUs
# Expects .gpu-data/{mds,tokenizer,rotten_tomatoes,val.jsonl.gz} (see docs/benchmarks.md) and Composer and
# streaming importable (PYTHONPATH). Everything lands in runs/; a tarball of the results goes to $2.
set -u
phase=$1
out=${2:-/tmp/out}
TOK=.gpu-data/tokenizer/bert-base-uncased
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p runs/device "$out"

if [ "$phase" = phase1 ]; then
  nvidia-smi -L; python -c "import torch, transformers; print(torch.__version__, transformers.__version__)"
  setsid nohup python scripts/pareto.py --mds .gpu-data/mds --tokenizer $TOK --task_dir .gpu-data/rotten_tomatoes \
      --out runs/pareto --plot runs/pareto/pareto.png --gpus 0,1 > runs/device/pareto.log 2>&1 < /dev/null &
  cp -r .gpu-data/mds /tmp/mds_bench; cp -r .gpu-data/mds /tmp/mds_main
  (CUDA_VISIBLE_DEVICES=2 timeout 540 python scripts/benchmark.py --corpus .gpu-data/val.jsonl.gz --tokenizer $TOK \
      --variants mosaic_bert:flex:compile hf_bert:sdpa:compile --shapes 128x128 128x256 --lengths dataset \
      --mds /tmp/mds_bench --json runs/device/bench_dataset.json > runs/device/bench.log 2>&1) &
  bench=$!
  (export CUDA_VISIBLE_DEVICES=3
   common="variables.data_local=/tmp/mds_main tokenizer_name=$TOK eval_loader=null save_folder=null"
   # a: one microbatch of 256 per step (as the benchmark's step); b: 4 microbatches of 128 per step, which is
   # what one GPU of the recipe's 8-GPU run does (4096 / 8 = 512 samples per GPU per step).
   timeout 260 python main.py yamls/mosaicbert-base.yaml $common global_train_batch_size=256 \
       device_train_microbatch_size=256 max_duration=140ba callbacks.speed_monitor.window_size=40 \
       loggers.jsonl.path=runs/device/main_b256.jsonl > runs/device/main_b256.log 2>&1
   timeout 260 python main.py yamls/mosaicbert-base.yaml $common global_train_batch_size=512 \
       device_train_microbatch_size=128 max_duration=70ba callbacks.speed_monitor.window_size=40 \
       loggers.jsonl.path=runs/device/main_b512_mb128.jsonl > runs/device/main_b512_mb128.log 2>&1) &
  main=$!
  wait $bench $main
  grep -h "throughput/tokens_per_sec" runs/device/main_*.jsonl | tail -n 4
  tail -n 30 runs/device/bench.log
fi

if [ "$phase" = phase2 ]; then
  for i in $(seq 1 60); do [ -f runs/pareto/results.json ] && break; pgrep -f scripts/pareto.py > /dev/null || break; sleep 5; done
  tail -n 25 runs/device/pareto.log
  timeout 420 python scripts/scaling.py yamls/mosaicbert-base.yaml --gpus 1 2 4 --steps 20 --warmup 8 \
      --out runs/scaling --set variables.data_local=.gpu-data/mds tokenizer_name=$TOK 2>&1 | tail -n 12
fi

tar czf "$out/$phase.tar.gz" runs/device runs/pareto/*.json runs/pareto/*.md runs/pareto/*.png \
    runs/pareto/*/metrics.jsonl runs/pareto/*/*.log runs/pareto/*/finetune/results.* runs/scaling 2>/dev/null
ls -la "$out"
