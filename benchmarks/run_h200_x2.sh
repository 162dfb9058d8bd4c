#!/usr/bin/env bash
# The GPU measurements of docs/time_to_quality.md and docs/benchmarks.md, as run on a 2 x H200 machine
# (the device tool's nvidia-h200-x2) in calls of at most 10 minutes each:
#   bash benchmarks/run_h200_x2.sh phase1 $OUT   # scripts/pareto.py, BERT on GPU 0 and MosaicBERT on GPU 1
#                                                # (started in the background; this call waits up to 9 min)
#   bash benchmarks/run_h200_x2.sh phase2 $OUT   # waits for pareto.py, then scripts/scaling.py on 1 and 2 GPUs
#                                                # with torch's default optimize_ddp=true (the recipes' then)
#   bash benchmarks/run_h200_x2.sh phase3 $OUT   # scaling.py on 2 GPUs with optimize_ddp=false (the recipes' now);
#                                                # then GPU 0: main.py's Composer throughput at 4 x 128 per step,
#                                                # GPU 1: benchmark.py on the same dataset batches at 128
# Expects .gpu-data/{mds,tokenizer,rotten_tomatoes,val.jsonl.gz} (see docs/benchmarks.md) and Composer and
# streaming importable (PYTHONPATH). Everything lands in runs/; a tarball of the results goes to $2.
set -u
phase=$1
out=${2:-/tmp/out}
TOK=.gpu-data/tokenizer/bert-base-uncased
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p runs/device "$out"
nvidia-smi -L; python -c "import torch, transformers; print(torch.__version__, transformers.__version__)"

if [ "$phase" = phase1 ]; then
  setsid nohup python scripts/pareto.py --mds .gpu-data/mds --tokenizer $TOK --task_dir .gpu-data/rotten_tomatoes \
      --out runs/pareto --plot runs/pareto/pareto.png --gpus 0,1 > runs/device/pareto.log 2>&1 < /dev/null &
  for i in $(seq 1 105); do [ -f runs/pareto/results.json ] && break; sleep 5; done
  grep -h "time_budget\|eval @" runs/pareto/*/pretrain.log | tail -n 30
fi

if [ "$phase" = phase2 ]; then
  for i in $(seq 1 60); do [ -f runs/pareto/results.json ] && break; pgrep -f scripts/pareto.py > /dev/null || break; sleep 5; done
  tail -n 12 runs/device/pareto.log
  timeout 450 python scripts/scaling.py yamls/mosaicbert-base.yaml --gpus 1 2 --steps 20 --warmup 8 \
      --out runs/scaling --set variables.data_local=.gpu-data/mds tokenizer_name=$TOK \
      compile_config.optimize_ddp=true 2>&1 | tail -n 8
fi

if [ "$phase" = phase3 ]; then
  timeout 200 python scripts/scaling.py yamls/mosaicbert-base.yaml --gpus 2 --steps 20 --warmup 8 \
      --out runs/scaling_no_ddp_optimizer --set variables.data_local=.gpu-data/mds tokenizer_name=$TOK \
      compile_config.optimize_ddp=false 2>&1 | tail -n 4
  cp -r .gpu-data/mds /tmp/mds_bench; cp -r .gpu-data/mds /tmp/mds_main
  (export CUDA_VISIBLE_DEVICES=0
   common="variables.data_local=/tmp/mds_main tokenizer_name=$TOK eval_loader=null save_folder=null"
   # 4 microbatches of 128 per step: what one GPU of the recipe's 8-GPU run does (4096 / 8 = 512 per GPU).
   timeout 270 python main.py yamls/mosaicbert-base.yaml $common global_train_batch_size=512 \
       device_train_microbatch_size=128 max_duration=70ba callbacks.speed_monitor.window_size=40 \
       loggers.jsonl.path=runs/device/main_b512_mb128.jsonl > runs/device/main_b512_mb128.log 2>&1
   ) &
  main=$!
  CUDA_VISIBLE_DEVICES=1 timeout 280 python scripts/benchmark.py --corpus .gpu-data/val.jsonl.gz --tokenizer $TOK \
      --variants mosaic_bert:flex:compile hf_bert:sdpa:compile --shapes 128x128 --lengths dataset \
      --mds /tmp/mds_bench --json runs/device/bench_dataset.json > runs/device/bench.log 2>&1
  wait $main
  for f in runs/device/main_*.jsonl; do echo $f; grep "throughput/tokens_per_sec" $f | tail -n 1; done
  tail -n 8 runs/device/bench.log
fi

tar czf "$out/$phase.tar.gz" runs/device runs/pareto/*.json runs/pareto/*.md runs/pareto/*.png \
    runs/pareto/*/metrics.jsonl runs/pareto/*/*.log runs/pareto/*/finetune/results.* runs/scaling* 2>/dev/null
ls -la "$out"
