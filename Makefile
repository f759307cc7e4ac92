# Two commands do all the set-up on a fresh clone:
#   make demo   the collector with a local agent streaming live (no GPU, broker or database needed)
#   make test   the whole test suite (installs mosquitto and chromium when missing and run as root)
# PyTorch is installed first and pinned, so that no multi-GB CUDA build is pulled in by accident on
# a CPU machine. On a GPU machine, install the torch build you want into .venv first: it is kept.

VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
# e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu where no CPU wheel of torch is at hand.
TORCH_INDEX ?=
EXTRAS ?= agent,collector,dev,postgres

BIN := $(VENV)/bin
STAMP := $(VENV)/.ctxscope-installed

.PHONY: demo test lint setup clean

demo: $(STAMP)
	$(BIN)/ctxscope demo

test: $(STAMP)
	bash scripts/system-deps.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy agent collector shared ctxscope
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy agent collector shared ctxscope

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || \
		$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
