#!/usr/bin/env bash
# Issue 7 on one 4 x H200 machine (the device tool's nvidia-h200-x4), session 3:
#   1. Composer's FSDP on 2 GPUs: `pytest tests/test_distributed.py -k fsdp` (train, save, resume; the
#      resumed losses must equal the uninterrupted run's);
#   2. data-parallel scaling of the MosaicBERT-base recipe on 1, 2 and 4 GPUs of this one host.
# Usage: bash benchmarks/run_h200_x4.sh $OUT   (started in the background by the caller when a device call
# is shorter than the whole run; everything lands in runs/x4 and a tarball in $OUT).
# Expects .gpu-data/{mds,tokenizer} (see docs/benchmarks.md) and Composer + streaming on PYTHONPATH.
set -u
out=${1:-/tmp/out}
TOK=.gpu-data/tokenizer/bert-base-uncased
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p runs/x4 "$out"
nvidia-smi -L; python -c "import torch, transformers; print(torch.__version__, transformers.__version__)"

source benchmarks/offline_tokenizer.sh

CUDA_VISIBLE_DEVICES=0,1 timeout 240 python -m pytest -q -p no:cacheprovider tests/test_distributed.py -k fsdp \
    -rA > runs/x4/fsdp_test.log 2>&1
echo "fsdp test exit $?"; tail -n 5 runs/x4/fsdp_test.log

timeout 420 python scripts/scaling.py yamls/mosaicbert-base.yaml --gpus 1 2 4 --steps 20 --warmup 8 \
    --out runs/x4/scaling --set variables.data_local=.gpu-data/mds tokenizer_name=$TOK > runs/x4/scaling.log 2>&1
echo "scaling exit $?"; tail -n 12 runs/x4/scaling.log
touch runs/x4/DONE
tar czf "$out/x4.tar.gz" runs/x4
