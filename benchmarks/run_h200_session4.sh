#!/usr/bin/env bash
# Session 4 on a 2 x H200 machine (the device tool's nvidia-h200-x2), started in the background and waited
# on over one or two device calls (each call is at most 10 minutes):
#   bash benchmarks/run_h200_session4.sh $OUT
# 1. both GPUs: Composer's FSDP test of issue 7 (train on 2 GPUs, save, resume; equal losses), every
#    launch's whole output kept (pytest --basetemp under runs/s4);
# 2. GPU 0: scripts/microbench.py, GeGLU block cases (projection layout, GELU form, GEMM floor,
#    max-autotune); GPU 1: microbench attention cases (layouts, SDPA backends), then a kernel table of
#    the whole step (benchmark.py --profile) with the recipes' settings.
# Expects .gpu-data/{tokenizer,val.jsonl.gz} and Composer + streaming on PYTHONPATH. Results: runs/s4, a
# tarball in $OUT; runs/s4/DONE marks the end.
set -u
out=${1:-/tmp/out}
TOK=.gpu-data/tokenizer/bert-base-uncased
CORPUS=.gpu-data/val.jsonl.gz
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p runs/s4 "$out"
nvidia-smi -L; python -c "import torch, transformers; print(torch.__version__, transformers.__version__)"

source benchmarks/offline_tokenizer.sh
timeout 240 python -m pytest -q -p no:cacheprovider --basetemp=runs/s4/fsdp_tmp tests/test_distributed.py \
    -k fsdp -rA > runs/s4/fsdp_test.log 2>&1
echo "fsdp test exit $?"; tail -n 3 runs/s4/fsdp_test.log
find runs/s4/fsdp_tmp -name "launch-*.log" -o -name "*.jsonl" -path "*fsdp*" | head -20

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
tar czf "$out/s4.tar.gz" --exclude="*.pt" --exclude="*.mds*" --exclude="index.json" runs/s4
touch runs/s4/DONE
ls -la "$out"
