# ddpm-deploy. Every target installs what it needs into $(VENV) first.
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
MODEL   ?= google/ddpm-cat-256
ENGINES ?= engines
ENGINE  ?= $(ENGINES)/unet.onnx
BATCH   ?= 1
STEPS   ?= 1000
SEED    ?= 0
OUT     ?= out
NOISE   ?= numpy
# torch 2.13.0 (CPU build) lies in /opt/wheels on our machines; elsewhere pip takes it from PyPI.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: help install dev engine sample test test-full clean

help:
	@echo "make install    runtime only (numpy, onnxruntime, Pillow, tqdm) into $(VENV)"
	@echo "make dev        runtime + export + test dependencies"
	@echo "make engine     export MODEL=$(MODEL) to $(ENGINES)/unet.onnx (parity-gated)"
	@echo "make sample     sample ENGINE=$(ENGINE) BATCH=$(BATCH) STEPS=$(STEPS) SEED=$(SEED) NOISE=$(NOISE) into OUT=$(OUT)/"
	@echo "make test       the test suite (installs dev dependencies first)"
	@echo "make test-full  also the slow checks on the full reference config"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(PY)
	$(PIP) install --quiet $(FIND_LINKS) -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(PY)
	$(PIP) install --quiet $(FIND_LINKS) -e '.[export,test]'
	touch $@ $(VENV)/.runtime

install: $(VENV)/.runtime
dev: $(VENV)/.dev

engine: $(VENV)/.dev
	$(PY) -m export.onnx --model $(MODEL) --out $(ENGINES)

sample: $(VENV)/.runtime
	$(PY) -m runtime.sample --engine $(ENGINE) --batch $(BATCH) --steps $(STEPS) --seed $(SEED) --noise $(NOISE) --out $(OUT)

test: $(VENV)/.dev
	$(PY) -m pytest

test-full: $(VENV)/.dev
	$(PY) -m pytest -m '' -s

clean:
	rm -rf $(VENV) out build *.egg-info .pytest_cache
