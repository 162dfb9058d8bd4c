#!/usr/bin/env bash
# Session 3 on a 2 x H200 machine (the device tool's nvidia-h200-x2), started in the background and
# waited on over two device calls (each call is at most 10 minutes):
#   bash benchmarks/run_h200_speed.sh $OUT
# 1. both GPUs: Composer's FSDP test of issue 7 (train on 2 GPUs, save, resume; equal losses);
# 2. GPU 0: scripts/microbench.py (GeGLU block per dropout variant, attention per FlexAttention kernel
#    option), then benchmark.py at seq 512;
#    GPU 1: benchmark.py at seq 128, MosaicBERT with and without fast_dropout against HF, then main.py at
#    the recipe's shapes (one GPU of the 8-GPU recipe: 512 samples per step in 4 microbatches of 128).
# Expects .gpu-data/{mds,tokenizer,val.jsonl.gz} and Composer + streaming on PYTHONPATH. Results: runs/speed,
# and a tarball in $OUT; runs/speed/DONE marks the end.
set -u
out=${1:-/tmp/out}
TOK=.gpu-data/tokenizer/bert-base-uncased
CORPUS=.gpu-data/val.jsonl.gz
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p runs/speed "$out"
nvidia-smi -L; python -c "import torch, transformers; print(torch.__version__, transformers.__version__)"

source benchmarks/offline_tokenizer.sh
timeout 180 python -m pytest -q -p no:cacheprovider tests/test_distributed.py -k fsdp -rA \
    > runs/speed/fsdp_test.log 2>&1
echo "fsdp test exit $?"; tail -n 3 runs/speed/fsdp_test.log

(export CUDA_VISIBLE_DEVICES=0
 timeout 330 python scripts/microbench.py --tokens 32768 --seq 128 --json runs/speed/microbench.json \
     > runs/speed/microbench.log 2>&1
 timeout 270 python scripts/benchmark.py --corpus $CORPUS --tokenizer $TOK --steps 20 --warmup 8 \
     --variants mosaic_bert:flex:compile hf_bert:sdpa:compile --shapes 512x64 --lengths full uniform \
     --json runs/speed/bench_s512.json > runs/speed/bench_s512.log 2>&1) &
gpu0=$!
(export CUDA_VISIBLE_DEVICES=1
 timeout 360 python scripts/benchmark.py --corpus $CORPUS --tokenizer $TOK --steps 20 --warmup 8 \
     --variants mosaic_bert:flex:compile mosaic_bert:flex:compile:model.config.fast_dropout=false \
     hf_bert:sdpa:compile --shapes 128x256 --lengths full uniform \
     --json runs/speed/bench_s128.json > runs/speed/bench_s128.log 2>&1
 cp -r .gpu-data/mds /tmp/mds_main
 timeout 240 python main.py yamls/mosaicbert-base.yaml variables.data_local=/tmp/mds_main tokenizer_name=$TOK \
     eval_loader=null save_folder=null global_train_batch_size=512 device_train_microbatch_size=128 \
     max_duration=60ba callbacks.speed_monitor.window_size=30 \
     loggers.jsonl.path=runs/speed/main_b512_mb128.jsonl > runs/speed/main_b512_mb128.log 2>&1) &
gpu1=$!
wait $gpu0 $gpu1
grep "^|" runs/speed/microbench.log
tail -n 8 runs/speed/bench_s128.log; tail -n 6 runs/speed/bench_s512.log
grep "throughput/tokens_per_sec" runs/speed/main_b512_mb128.jsonl | tail -n 1
tar czf "$out/speed.tar.gz" runs/speed
touch runs/speed/DONE
ls -la "$out"
