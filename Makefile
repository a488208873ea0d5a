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

TRITON_VENV ?= build/triton-venv
EMBED_BUILD ?= build/embed
SERVE_PORT  ?= 8000
SERVE_PID   ?= build/serve.pid

DEMO_MODEL   ?= models/digits16
DEMO_ENGINES ?= build/demo/engines
DEMO_COND_MODEL ?= models/digits16-cond
DEMO_COND_ENGINES ?= build/demo/cond-engines

.PHONY: help install dev demo quality engine cpu-engines sample embed triton-deps serve serve-config serve-stop serve-deps test test-full bench clean

help:
	@echo "make demo       the shipped digits models → $(DEMO_ENGINES), $(DEMO_COND_ENGINES) (gated FP32 + FP16 ONNX) → out/demo-grid.png, out/demo-digits-grid.png (a row per digit), out/demo-inpaint-grid.png, out/demo-img2img-strip.png, offline"
	@echo "make quality    Fréchet distance and classifier figures of the demo model's samplers → docs/quality.md"
	@echo "make install    runtime only (numpy, onnxruntime, Pillow, tqdm) into $(VENV)"
	@echo "make dev        runtime + export + test dependencies"
	@echo "make engine     MODEL=$(MODEL) → $(ENGINES)/unet.onnx, unet.fp16.onnx (gated), unet.plan (TensorRT + GPU)"
	@echo "make cpu-engines  ENGINES=$(ENGINES): + BF16/INT8 engines where this CPU has the units, gated, timed; --engine $(ENGINES) runs the fastest"
	@echo "make sample     sample ENGINE=$(ENGINE) BATCH=$(BATCH) STEPS=$(STEPS) SEED=$(SEED) NOISE=$(NOISE) into OUT=$(OUT)/"
	@echo "make embed      the C ABI (libddpm_runtime.so) and ddpm_sample_cpp into $(EMBED_BUILD)/ (CMake, g++, pybind11)"
	@echo "make triton-deps  NVIDIA Triton (the nvidia-pytriton wheel) + the runtime in $(TRITON_VENV) (numpy<2) for its tests"
	@echo "make serve      the HTTP image service (Ray Serve) on 127.0.0.1:$(SERVE_PORT) with $(ENGINES)/unet.onnx, or the demo model's engine; make serve-stop"
	@echo "make serve-deps only what the service needs (then it starts offline)"
	@echo "make serve-config  DEPLOY_OUT=deploy: serve_config.yaml (serve run / serve deploy), serve.env, kubernetes/rayservice.yaml (RayService + NetworkPolicy)"
	@echo "make test       the test suite (installs dev dependencies first)"
	@echo "make test-full  also the slow checks on the full reference config"
	@echo "make bench      MODE=quick (tiny model, a few min) or MODE=full (cat-256 config): docs/bench-MODE.md/.png, docs/bench-serving-MODE.md, docs/bench-cpu-precision-MODE.md, docs/bench-export-MODE.md, docs/bench-family-MODE.md, docs/bench-samplers-MODE.md/.png, docs/bench-reuse-MODE.md/.png, docs/bench-int8-MODE.md, docs/bench-peak-MODE.md, and in full mode docs/bench-compose.md/.png (bench.compose's other parts, the searches, run apart)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(PY)
	$(PIP) install --quiet $(FIND_LINKS) -e '.[cpu]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(PY)
	$(PIP) install --quiet $(FIND_LINKS) -e '.[cpu,export,test,serve]'
	touch $@ $(VENV)/.runtime $(VENV)/.serve

# The service alone (Ray Serve, FastAPI, httpx): after this it starts with no network at all.
$(VENV)/.serve: pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[cpu,serve]'
	touch $@ $(VENV)/.runtime

$(VENV)/.bench: $(VENV)/.dev
	$(PIP) install --quiet $(FIND_LINKS) -e '.[cpu,export,test,bench]'
	touch $@

install: $(VENV)/.runtime
dev: $(VENV)/.dev

# The model trained here and shipped in the repo (python -m demo.train): export, gates, a grid of samples.
demo: $(VENV)/.dev
	$(PY) -m export.onnx --model $(DEMO_MODEL) --out $(DEMO_ENGINES)
	$(PY) -m export.fp16 --engines $(DEMO_ENGINES)
	$(PY) -m demo.grid --engine $(DEMO_ENGINES)/unet.onnx --out $(OUT)/demo-grid.png
	$(PY) -m demo.edit --engine $(DEMO_ENGINES)/unet.onnx --out-dir $(OUT)
	$(PY) -m export.onnx --model $(DEMO_COND_MODEL) --out $(DEMO_COND_ENGINES)
	$(PY) -m export.fp16 --engines $(DEMO_COND_ENGINES)
	$(PY) -m demo.grid --engine $(DEMO_COND_ENGINES)/unet.onnx --per-class 8 --guidance-scale 2 --out $(OUT)/demo-digits-grid.png

quality: demo
	$(PY) -m demo.quality --engines $(DEMO_ENGINES) --conditional-engines $(DEMO_COND_ENGINES)

# FP32 ONNX (parity gate) → FP16 ONNX (accuracy gate) → TensorRT plan. Without TensorRT or a GPU the
# last step exits 4 and says so; the two ONNX models are ready for ONNX Runtime by then.
engine: $(VENV)/.dev
	$(PY) -m export.onnx --model $(MODEL) --out $(ENGINES)
	$(PY) -m export.fp16 --engines $(ENGINES)
	$(PY) -m export.trt --engines $(ENGINES) --min-batch $(MIN_BATCH) --opt-batch $(OPT_BATCH) --max-batch $(MAX_BATCH)

# What this CPU runs best beside unet.onnx (BF16 where it has BF16 units, INT8 where it has VNNI/AMX), gated and
# timed here; `--engine $(ENGINES)` (a folder) then runs the fastest.
cpu-engines: $(VENV)/.dev
	$(PY) -m export.cpu --engines $(ENGINES)

sample: $(VENV)/.runtime
	$(PY) -m runtime.sample --engine $(ENGINE) --batch $(BATCH) --steps $(STEPS) --seed $(SEED) --noise $(NOISE) --out $(OUT)

# The engine the service uses: ENGINE if it exists, else the demo model's (exported on first use).
SERVE_ENGINE ?= $(if $(wildcard $(ENGINE)),$(ENGINE),$(DEMO_ENGINES)/unet.onnx)

$(DEMO_ENGINES)/unet.onnx: | $(VENV)/.dev
	$(PY) -m export.onnx --model $(DEMO_MODEL) --out $(DEMO_ENGINES)

serve-deps: $(VENV)/.serve

# Started in the background; ready when it writes $(SERVE_READY), failed when its process is gone first (its
# own exit status, not a word in the log). make serve-stop drains it (SIGTERM) and waits for it to exit.
SERVE_READY ?= build/serve.ready
SERVE_LOG   ?= build/serve.log
serve: $(VENV)/.serve $(SERVE_ENGINE)
	@mkdir -p $(dir $(SERVE_PID)) $(dir $(SERVE_READY)) $(dir $(SERVE_LOG))
	@if [ -f $(SERVE_PID) ] && kill -0 $$(cat $(SERVE_PID)) 2>/dev/null; then echo "already serving (pid $$(cat $(SERVE_PID))); make serve-stop first"; exit 1; fi
	@rm -f $(SERVE_READY) $(SERVE_PID)
	@RAY_USAGE_STATS_ENABLED=0 nohup $(PY) -m serve --engine $(SERVE_ENGINE) --port $(SERVE_PORT) --pid-file $(SERVE_PID) \
		--ready-file $(SERVE_READY) > $(SERVE_LOG) 2>&1 & pid=$$!; \
	while [ ! -f $(SERVE_READY) ] && ! grep -qs '^State:[[:space:]]*Z' /proc/$$pid/status && kill -0 $$pid 2>/dev/null; do sleep 0.5; done; \
	if [ -f $(SERVE_READY) ]; then echo "serving at $$(cat $(SERVE_READY)) (pid $$pid; log $(SERVE_LOG))"; \
	else wait $$pid; code=$$?; tail -5 $(SERVE_LOG); echo "make serve: the service exited with status $$code before serving"; exit 1; fi

# Ray Serve's own deployment files from ours: serve_config.yaml (serve run / serve deploy), serve.env, kubernetes/
DEPLOY_OUT ?= deploy
serve-config: $(VENV)/.serve $(SERVE_ENGINE)
	$(PY) -m serve config --engine $(SERVE_ENGINE) --port $(SERVE_PORT) --out $(DEPLOY_OUT)

serve-stop:
	@if [ -f $(SERVE_PID) ] && kill -0 $$(cat $(SERVE_PID)) 2>/dev/null; then pid=$$(cat $(SERVE_PID)); kill $$pid; \
		while kill -0 $$pid 2>/dev/null && ! grep -qs '^State:[[:space:]]*Z' /proc/$$pid/status; do sleep 0.5; done; \
		rm -f $(SERVE_PID) $(SERVE_READY); echo "stopped"; \
	else rm -f $(SERVE_PID) $(SERVE_READY); echo "no service running here"; fi

embed: $(VENV)/.dev
	cmake -S embed -B $(EMBED_BUILD) -DPython_EXECUTABLE=$(abspath $(PY))
	cmake --build $(EMBED_BUILD) -j
	@echo "built $(EMBED_BUILD)/libddpm_runtime.so and $(EMBED_BUILD)/ddpm_sample_cpp (header: embed/include/ddpm_runtime.h)"

# Triton's wheel pins numpy<2, so it gets an environment of its own (same Python: the backend stub matches it).
$(TRITON_VENV)/.ok: pyproject.toml
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install --quiet --upgrade pip
	$(TRITON_VENV)/bin/pip install --quiet nvidia-pytriton==0.7.0 -e '.[cpu]'
	touch $@

triton-deps: $(TRITON_VENV)/.ok

test: $(VENV)/.dev $(TRITON_VENV)/.ok
	$(PY) -m pytest

test-full: $(VENV)/.dev $(TRITON_VENV)/.ok
	$(PY) -m pytest -m '' -s

bench: $(VENV)/.bench
	$(PY) -m bench --mode $(MODE)
	$(PY) -m bench.serving --mode $(MODE)
	$(PY) -m bench.cpu_precision --mode $(MODE)
	$(PY) -m bench.export_memory --mode $(MODE)
	$(PY) -m bench.family --mode $(MODE)
	$(PY) -m bench.samplers --mode $(MODE)
	$(PY) -m bench.reuse --mode $(MODE)
	$(PY) -m bench.int8 --mode $(MODE)
	$(PY) -m bench.openvino_cache --mode $(MODE)
	$(PY) -m bench.peak --mode $(MODE)
	$(if $(filter full,$(MODE)),$(PY) -m bench.compose --part table)
	$(PY) -m bench.serve

clean:
	rm -rf $(VENV) out build *.egg-info .pytest_cache
