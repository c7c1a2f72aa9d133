# depthstream: `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON_SYSTEM ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
REPOSITORY ?= model_repository
MODEL ?= all
WEIGHTS ?=
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
BRIDGE_PORT ?= 8080
# NGC Triton release matching the embedded tritonserver 2.51 (for `make triton` and plans)
TRITON_IMAGE ?= nvcr.io/nvidia/tritonserver:24.10-py3
PYTEST_ARGS ?=
# Compose v2 (`docker compose`, Docker's plugin); Debian's v1 works the same: COMPOSE=docker-compose
COMPOSE ?= docker compose
BENCH_ARGS ?=
# more flags for `python -m export` (make export and make demo): --verbose, --force, --int8 never
EXPORT_ARGS ?=

# CHECKPOINT=ID_OR_DIR: any transformers depth checkpoint instead of the curated ones (NAME=...)
CHECKPOINT ?=
NAME ?=
# WEIGHTS= (hub download) | random (smoke mode) | DIR (a local checkpoint, with MODEL=name)
ifneq ($(CHECKPOINT),)
EXPORT_FLAGS := --checkpoint $(CHECKPOINT) $(if $(NAME),--name $(NAME))
else ifeq ($(WEIGHTS),random)
EXPORT_FLAGS := --random-weights
else ifneq ($(WEIGHTS),)
EXPORT_FLAGS := --weights $(WEIGHTS)
endif
export HTTP_PORT GRPC_PORT METRICS_PORT

.PHONY: help setup export serve triton plans repository-cpu repository-openvino up down demo bridge bench soak chaos test test-fast fuzz mutate check clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

# ONNXRUNTIME=auto: onnxruntime-gpu (CUDA and cuDNN from pip) where nvidia-smi lists a GPU, else
# onnxruntime; ONNXRUNTIME=cpu|gpu forces one (depthstream/accelerator.py)
ONNXRUNTIME ?= auto
# the stamp names the choice: ONNXRUNTIME=cpu on an existing .venv installs again
INSTALLED := $(VENV)/.installed-$(ONNXRUNTIME)
$(INSTALLED): requirements.txt requirements-dev.txt requirements-nodeps.txt depthstream/accelerator.py
	@echo "setup: installing the pinned dependencies into $(VENV) (the first time: a few minutes)"
	@test -x $(PYTHON) || $(PYTHON_SYSTEM) -m venv $(VENV)
	@$(PYTHON) -m pip install -qq --upgrade pip
	@ONNXRUNTIME=$(ONNXRUNTIME) $(PYTHON_SYSTEM) -m depthstream.accelerator requirements requirements.txt $(VENV)/requirements.txt
	@# the CPU and GPU builds share the `onnxruntime` module: never both
	@$(PYTHON) -m pip uninstall --quiet --yes onnxruntime onnxruntime-gpu 2>/dev/null || true
	@$(PYTHON) -m pip install -qq -r $(VENV)/requirements.txt -r requirements-dev.txt
	@$(PYTHON) -m pip install -qq --no-deps -r requirements-nodeps.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

setup: $(INSTALLED) ## create .venv with the pinned dependencies (ONNX Runtime's GPU build on NVIDIA machines)

export: setup ## export the models to ONNX in model_repository/ (WEIGHTS=random|DIR, MODEL=name, CHECKPOINT=ID_OR_DIR, EXPORT_ARGS=--verbose)
	$(PYTHON) -m export --model $(MODEL) --output $(REPOSITORY) $(EXPORT_FLAGS) $(EXPORT_ARGS)

serve: setup ## run the embedded tritonserver (CPU) on 127.0.0.1 (HTTP_PORT, GRPC_PORT, METRICS_PORT)
	$(PYTHON) -m serving --repository $(REPOSITORY)

# the same restrictions as deploy/compose.yaml (tests/test_deploy.py compares them)
TRITON_RESTRICTED := model-repository,shared-memory,logging,trace
triton: ## print the docker run line for the NGC Triton container (GPU) serving model_repository/ (TRITON_ADMIN_KEY)
	@key=$${TRITON_ADMIN_KEY:-$$($(PYTHON_SYSTEM) -c 'import secrets; print(secrets.token_hex(16))')}; \
	echo docker run --rm --gpus all --shm-size=1g \
	  -p 127.0.0.1:$(HTTP_PORT):8000 -p 127.0.0.1:$(GRPC_PORT):8001 -p 127.0.0.1:$(METRICS_PORT):8002 \
	  -v $(abspath $(REPOSITORY)):/models:ro $(TRITON_IMAGE) \
	  tritonserver --model-repository=/models --model-control-mode=none --strict-readiness=true \
	  --exit-on-error=true \
	  --http-restricted-api=$(TRITON_RESTRICTED):admin-key=$$key \
	  --grpc-restricted-protocol=$(TRITON_RESTRICTED):admin-key=$$key

plans: ## build TensorRT plans with trtexec in the NGC container (GPU + Docker)
	TRITON_IMAGE=$(TRITON_IMAGE) REPOSITORY=$(REPOSITORY) bash export/build_plans.sh

repository-cpu: setup ## the CPU flavour of model_repository/ for the NGC image on CPU-only nodes
	$(PYTHON) -m export.flavours cpu --source $(REPOSITORY) --target model_repository_cpu

repository-openvino: setup ## the flavour for Intel CPUs without AMX: the NGC image's openvino backend, FP32 names
	$(PYTHON) -m export.flavours openvino --source $(REPOSITORY) --target model_repository_openvino

up: ## start the NGC Triton container and the bridge with Docker Compose (GPU; TRITON_ADMIN_KEY, BRIDGE_TOKEN)
	TRITON_IMAGE=$(TRITON_IMAGE) $(COMPOSE) -p depthstream -f deploy/compose.yaml up -d --build

down: ## stop what `make up` started
	$(COMPOSE) -p depthstream -f deploy/compose.yaml down

demo: setup ## export (WEIGHTS=random for a smoke demo), run Triton + the bridge, open http://127.0.0.1:8080/
	@$(PYTHON) -m export --brief --first --model $(MODEL) --output $(REPOSITORY) $(EXPORT_FLAGS) $(EXPORT_ARGS) || { \
	  echo; echo "make demo: no weights. \`make demo WEIGHTS=random\` runs a smoke demo (meaningless depth)," \
	  "or point it at a checkpoint: make demo MODEL=<name> WEIGHTS=DIR"; exit 2; }
	@# the quickest model first, served at once; the rest exported while the page streams
	@DEMO_EXPORT_ARGS="--model $(MODEL) $(EXPORT_FLAGS) $(EXPORT_ARGS)" \
	  $(PYTHON) -m demo --repository $(REPOSITORY) --port $(BRIDGE_PORT)

bridge: setup ## run only the bridge (Triton already running; BRIDGE_* variables configure it)
	$(PYTHON) -m bridge --port $${BRIDGE_PORT:-$(BRIDGE_PORT)} --triton-url $${BRIDGE_TRITON_URL:-127.0.0.1:$(GRPC_PORT)}

bench: setup ## benchmark every approach side by side (BENCH_ARGS=--quick for a smoke run)
	$(PYTHON) -m bench --repository $(REPOSITORY) $(BENCH_ARGS)

soak: setup ## overload: one client alone, 8 at 10 fps for 60 s, then costly + ordinary; checks its goals
	$(PYTHON) -m bench.soak --repository $(REPOSITORY)

# seconds of `make chaos` (its 2-minute version is part of make test)
DURATION ?= 1800
chaos: setup ## the cluster (HAProxy, 2 bridges, 2 Tritons) under load and a seeded fault schedule (DURATION=1800)
	$(PYTHON) -m bench.chaos --duration-s $(DURATION)

test: setup ## run the test suite (unit, integration with real Triton and uvicorn, browser)
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-fast: setup ## the tests that need no tritonserver, uvicorn or browser (a few minutes)
	DEPTHSTREAM_TESTS_FAST_ONLY=1 $(PYTHON) -m pytest -m "not integration" $(PYTEST_ARGS)

# seconds each fuzz target runs under the engine (Atheris: libFuzzer on instrumented Python)
FUZZ_SECONDS ?= 120
fuzz: setup ## coverage-guided fuzzing of every parser a stranger's bytes reach (FUZZ_SECONDS=120 per target)
	$(PYTHON) -m tests.fuzz --seconds $(FUZZ_SECONDS) --output bench/results/fuzz.json

mutate: setup ## mutation test: hand-made bugs in bridge, contract and export must fail a fast test
	$(PYTHON) -m tests.mutations

check: setup ## lint, format and type check (mypy over every package outside tests)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean: ## remove generated files (keeps .venv and model_repository/)
	rm -rf build .pytest_cache test-artifacts
