# Two commands do all the set-up on a fresh clone:
#   make demo   the collector with a local agent streaming live (no GPU, broker or database needed)
#   make test   the whole test suite (installs mosquitto and chromium when missing and run as root)
# Every package comes from the committed lock (requirements/dev.txt, hash-checked), except torch: it is
# installed first and pinned, so that no multi-GB CUDA build is pulled in by accident on a CPU machine.
# On a GPU machine, install the torch build you want into .venv first: it is kept.

VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
# e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu where no CPU wheel of torch is at hand.
TORCH_INDEX ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.ctxscope-installed

.PHONY: demo test lint setup lock clean

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

$(STAMP): pyproject.toml setup.py requirements/dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || \
		$(BIN)/python -m pip install --quiet --no-deps $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	bash scripts/install-lock.sh $(BIN)/python requirements/dev.txt --quiet
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

# Refresh requirements/*.txt from pyproject.toml's ranges (after changing a range, or to take newer
# releases on purpose), then `make test` and commit both.
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet "uv>=0.9,<1"
	UV=$(BIN)/uv bash scripts/lock.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
