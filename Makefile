# dm3d-exp — run `make help` for the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dm3d-install-stamp
ARGS ?=
SWEEP ?= methods_x_targets
DETECTOR ?= centerpoint_voxel_synth
PYTEST_ARGS ?=

.PHONY: help install run test test-fast bench ui sweep synth train-reference clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/constraints.txt scripts/install.sh
	bash scripts/install.sh

install: $(STAMP)  ## create .venv and install everything (idempotent; mmcv wheel cached in ~/.cache/dm3d-exp)

run: install  ## the main job on the embedded synthetic benchmark (pass extra Hydra overrides with ARGS="...")
	$(VENV)/bin/dm3d $(ARGS)

synth: install  ## generate (or reuse) the embedded synthetic KITTI-format dataset and print where it is
	$(VENV)/bin/dm3d-synth $(ARGS)

test: install  ## run the whole test suite (CPU)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: install  ## tests without the slow marker
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: install  ## benchmarks; results (ratios to targets) in bench/results/*.json
	$(PY) bench/run_all.py

ui: install  ## MLflow UI on http://127.0.0.1:5000 for the local sqlite store
	@echo "open http://127.0.0.1:5000/#/experiments?workflowType=machine_learning (the runs view; MLflow 3 opens the GenAI view by default)"
	$(VENV)/bin/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///$(CURDIR)/mlflow.db

sweep: install  ## a ready-made multirun from sweeps/ (SWEEP=name)
	$(VENV)/bin/dm3d +sweeps=$(SWEEP) --multirun $(ARGS)

train-reference: install  ## train a reference detector on the synthetic benchmark (DETECTOR=name)
	$(VENV)/bin/dm3d-train detector=$(DETECTOR) $(ARGS)

clean:  ## remove the venv and local outputs (not the user cache)
	rm -rf $(VENV) outputs multirun .pytest_cache
