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
MIN_BATCH ?= 1
OPT_BATCH ?= 4
MAX_BATCH ?= 16
# torch 2.13.0 (CPU build) lies in /opt/wheels on our machines; elsewhere pip takes it from PyPI.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

MODE    ?= quick

.PHONY: help install dev engine sample test test-full bench clean

help:
	@echo "make install    runtime only (numpy, onnxruntime, Pillow, tqdm) into $(VENV)"
	@echo "make dev        runtime + export + test dependencies"
	@echo "make engine     MODEL=$(MODEL) → $(ENGINES)/unet.onnx, unet.fp16.onnx (gated), unet.plan (TensorRT + GPU)"
	@echo "make sample     sample ENGINE=$(ENGINE) BATCH=$(BATCH) STEPS=$(STEPS) SEED=$(SEED) NOISE=$(NOISE) into OUT=$(OUT)/"
	@echo "make test       the test suite (installs dev dependencies first)"
	@echo "make test-full  also the slow checks on the full reference config"
	@echo "make bench      MODE=quick (tiny model, a few min) or MODE=full (cat-256 config): docs/bench-MODE.md/.png, docs/bench-serving-MODE.md"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(PY)
	$(PIP) install --quiet $(FIND_LINKS) -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(PY)
	$(PIP) install --quiet $(FIND_LINKS) -e '.[export,test]'
	touch $@ $(VENV)/.runtime

$(VENV)/.bench: $(VENV)/.dev
	$(PIP) install --quiet $(FIND_LINKS) -e '.[export,test,bench]'
	touch $@

install: $(VENV)/.runtime
dev: $(VENV)/.dev

# FP32 ONNX (parity gate) → FP16 ONNX (accuracy gate) → TensorRT plan. Without TensorRT or a GPU the
# last step exits 4 and says so; the two ONNX models are ready for ONNX Runtime by then.
engine: $(VENV)/.dev
	$(PY) -m export.onnx --model $(MODEL) --out $(ENGINES)
	$(PY) -m export.fp16 --engines $(ENGINES)
	$(PY) -m export.trt --engines $(ENGINES) --min-batch $(MIN_BATCH) --opt-batch $(OPT_BATCH) --max-batch $(MAX_BATCH)

sample: $(VENV)/.runtime
	$(PY) -m runtime.sample --engine $(ENGINE) --batch $(BATCH) --steps $(STEPS) --seed $(SEED) --noise $(NOISE) --out $(OUT)

test: $(VENV)/.dev
	$(PY) -m pytest

test-full: $(VENV)/.dev
	$(PY) -m pytest -m '' -s

bench: $(VENV)/.bench
	$(PY) -m bench --mode $(MODE)
	$(PY) -m bench.serving --mode $(MODE)

clean:
	rm -rf $(VENV) out build *.egg-info .pytest_cache
