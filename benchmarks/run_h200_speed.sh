#!/usr/bin/env bash
# Issue 6, session 3, on a 2 x H200 machine (the device tool's nvidia-h200-x2), one call per phase:
#   bash benchmarks/run_h200_speed.sh kernels $OUT  # GPU 0: scripts/microbench.py (GeGLU dropout variants,
#                                                    #   FlexAttention kernel options); GPU 1: benchmark.py,
#                                                    #   MosaicBERT with and without fast_dropout against HF
#   bash benchmarks/run_h200_speed.sh final $OUT    # GPU 0: benchmark.py at seq 128 (full, uniform, dataset);
#                                                    # GPU 1: seq 512, then main.py at the recipe's shapes
# Expects .gpu-data/{mds,tokenizer,val.jsonl.gz} and Composer + streaming on PYTHONPATH.
set -u
phase=$1
out=${2:-/tmp/out}
TOK=.gpu-data/tokenizer/bert-base-uncased
CORPUS=.gpu-data/val.jsonl.gz
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p runs/speed "$out"
nvidia-smi -L; python -c "import torch, transformers; print(torch.__version__, transformers.__version__)"

if [ "$phase" = kernels ]; then
  CUDA_VISIBLE_DEVICES=0 timeout 540 python scripts/microbench.py --tokens 32768 --seq 128 \
      --json runs/speed/microbench.json > runs/speed/microbench.log 2>&1 &
  micro=$!
  CUDA_VISIBLE_DEVICES=1 timeout 540 python scripts/benchmark.py --corpus $CORPUS --tokenizer $TOK --steps 20 \
      --warmup 8 --variants mosaic_bert:flex:compile mosaic_bert:flex:compile:model.config.fast_dropout=false \
      hf_bert:sdpa:compile --shapes 128x256 --lengths full uniform \
      --json runs/speed/bench_fast_dropout.json > runs/speed/bench_fast_dropout.log 2>&1
  wait $micro
  grep -v "^|" runs/speed/microbench.log | tail -n 40; grep "^|" runs/speed/microbench.log
  tail -n 14 runs/speed/bench_fast_dropout.log
fi

if [ "$phase" = final ]; then
  cp -r .gpu-data/mds /tmp/mds_bench; cp -r .gpu-data/mds /tmp/mds_main
  CUDA_VISIBLE_DEVICES=0 timeout 560 python scripts/benchmark.py --corpus $CORPUS --tokenizer $TOK --steps 20 \
      --warmup 8 --mds /tmp/mds_bench --variants mosaic_bert:flex:compile hf_bert:sdpa:compile \
      --shapes 128x256 --lengths full uniform dataset \
      --json runs/speed/bench_s128.json > runs/speed/bench_s128.log 2>&1 &
  s128=$!
  (export CUDA_VISIBLE_DEVICES=1
   timeout 300 python scripts/benchmark.py --corpus $CORPUS --tokenizer $TOK --steps 20 --warmup 8 \
       --variants mosaic_bert:flex:compile hf_bert:sdpa:compile --shapes 512x64 --lengths full uniform \
       --json runs/speed/bench_s512.json > runs/speed/bench_s512.log 2>&1
   # One GPU of the recipe's 8-GPU run: 512 samples per step in 4 microbatches of 128.
   timeout 240 python main.py yamls/mosaicbert-base.yaml variables.data_local=/tmp/mds_main tokenizer_name=$TOK \
       eval_loader=null save_folder=null global_train_batch_size=512 device_train_microbatch_size=128 \
       max_duration=60ba callbacks.speed_monitor.window_size=30 \
       loggers.jsonl.path=runs/speed/main_b512_mb128.jsonl > runs/speed/main_b512_mb128.log 2>&1)
  wait $s128
  tail -n 10 runs/speed/bench_s128.log; tail -n 8 runs/speed/bench_s512.log
  grep "throughput/tokens_per_sec" runs/speed/main_b512_mb128.jsonl | tail -n 1
fi

tar czf "$out/speed_$phase.tar.gz" runs/speed
ls -la "$out"
