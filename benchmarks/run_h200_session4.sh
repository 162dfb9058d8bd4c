#!/usr/bin/env bash
# Session 4 on a 2 x H200 machine (the device tool's nvidia-h200-x2), started in the background and waited
# on over one or two device calls (each call is at most 10 minutes):
#   bash benchmarks/run_h200_session4.sh $OUT microbench|speed|final
# Every phase first runs Composer's FSDP test of issue 7 on both GPUs (train on 2 GPUs, save, resume; equal
# losses), keeping every launch's whole output (pytest --basetemp under runs/s4).
# microbench (call 1): GPU 0: scripts/microbench.py, GeGLU block cases (projection layout, GELU form, GEMM
#   floor, max-autotune); GPU 1: microbench attention cases (layouts, SDPA backends), then a kernel table
#   of the whole step (benchmark.py --profile) with the recipes' settings.
# speed (call 2, after the two-GEMM GeGLU change): GPU 0: benchmark.py at seq 512; GPU 1: benchmark.py at
#   seq 128, then main.py at the recipe's per-GPU shapes (512 samples per step in 4 microbatches of 128).
# final (call 3): GPU 0: tests/test_model.py, whose CUDA tests CI cannot run; GPU 1: benchmark.py on the
#   recipe's own batches (MDS, microbatch 128), to set against call 2's main.py run.
# Expects .gpu-data/{mds,tokenizer,val.jsonl.gz} and Composer + streaming on PYTHONPATH. Results: runs/s4,
# a tarball in $OUT; runs/s4/DONE marks the end.
set -u
out=${1:-/tmp/out}
phase=${2:-microbench}
case "$phase" in microbench|speed|final) ;; *) echo "unknown phase '$phase': use microbench, speed or final" >&2; exit 2;; esac
TOK=.gpu-data/tokenizer/bert-base-uncased
CORPUS=.gpu-data/val.jsonl.gz
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p runs/s4 "$out"
nvidia-smi -L; python -c "import torch, transformers; print(torch.__version__, transformers.__version__)"

source benchmarks/offline_tokenizer.sh
timeout 240 python -m pytest -q -p no:cacheprovider --basetemp=runs/s4/fsdp_tmp tests/test_distributed.py \
    -k fsdp -rA > runs/s4/fsdp_test.log 2>&1
echo "fsdp test exit $?"; tail -n 3 runs/s4/fsdp_test.log
find runs/s4/fsdp_tmp -name "launch-*.log"

if [ "$phase" = microbench ]; then
  (export CUDA_VISIBLE_DEVICES=0
   timeout 420 python scripts/microbench.py --only ffn --max-autotune --tokens 32768 \
       --json runs/s4/microbench_ffn.json > runs/s4/microbench_ffn.log 2>&1) &
  gpu0=$!
  (export CUDA_VISIBLE_DEVICES=1
   timeout 240 python scripts/microbench.py --only attention --tokens 32768 --seq 128 \
       --json runs/s4/microbench_attention.json > runs/s4/microbench_attention.log 2>&1
   timeout 200 python scripts/benchmark.py --corpus $CORPUS --tokenizer $TOK --steps 20 --warmup 8 \
       --variants mosaic_bert:flex:compile --shapes 128x256 --lengths full \
       --profile "mosaic_bert:flex:compile@128x256@full" --json runs/s4/profile_s128.json \
       > runs/s4/profile_s128.log 2>&1) &
  gpu1=$!
  wait $gpu0 $gpu1
  grep "^|" runs/s4/microbench_ffn.log runs/s4/microbench_attention.log
  tail -n 4 runs/s4/profile_s128.log
elif [ "$phase" = final ]; then
  (export CUDA_VISIBLE_DEVICES=0
   timeout 200 python -m pytest -q -p no:cacheprovider tests/test_model.py -rs > runs/s4/test_model_gpu.log 2>&1
   tail -n 4 runs/s4/test_model_gpu.log) &
  gpu0=$!
  (export CUDA_VISIBLE_DEVICES=1
   cp -r .gpu-data/mds /tmp/mds_bench
   timeout 300 python scripts/benchmark.py --corpus $CORPUS --tokenizer $TOK --mds /tmp/mds_bench --steps 20 \
       --warmup 8 --variants mosaic_bert:flex:compile --shapes 128x128 --lengths dataset \
       --json runs/s4/bench_dataset_b128.json > runs/s4/bench_dataset_b128.log 2>&1
   tail -n 4 runs/s4/bench_dataset_b128.log) &
  gpu1=$!
  wait $gpu0 $gpu1
else  # speed
  (export CUDA_VISIBLE_DEVICES=0
   timeout 330 python scripts/benchmark.py --corpus $CORPUS --tokenizer $TOK --steps 20 --warmup 8 \
       --variants mosaic_bert:flex:compile hf_bert:sdpa:compile --shapes 512x64 --lengths full uniform \
       --json runs/s4/bench_s512.json > runs/s4/bench_s512.log 2>&1) &
  gpu0=$!
  (export CUDA_VISIBLE_DEVICES=1
   timeout 360 python scripts/benchmark.py --corpus $CORPUS --tokenizer $TOK --steps 20 --warmup 8 \
       --variants mosaic_bert:flex:compile hf_bert:sdpa:compile --shapes 128x256 --lengths full uniform \
       --json runs/s4/bench_s128.json > runs/s4/bench_s128.log 2>&1
   cp -r .gpu-data/mds /tmp/mds_main
   timeout 240 python main.py yamls/mosaicbert-base.yaml variables.data_local=/tmp/mds_main tokenizer_name=$TOK \
       eval_loader=null save_folder=null global_train_batch_size=512 device_train_microbatch_size=128 \
       max_duration=60ba callbacks.speed_monitor.window_size=30 \
       loggers.jsonl.path=runs/s4/main_b512_mb128.jsonl > runs/s4/main_b512_mb128.log 2>&1) &
  gpu1=$!
  wait $gpu0 $gpu1
  tail -n 8 runs/s4/bench_s128.log; tail -n 6 runs/s4/bench_s512.log
  grep "throughput/tokens_per_sec" runs/s4/main_b512_mb128.jsonl | tail -n 1
fi
tar czf "$out/s4.tar.gz" --exclude="*.pt" --exclude="*.mds*" --exclude="index.json" runs/s4
touch runs/s4/DONE
ls -la "$out"
