# The front door: `make train` and `make test` are all a new machine needs (Python 3 and make).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/default.yaml
FUZZ_SECONDS ?= 60
EXTRAS := dev,plot,export,serve,sweep,sklearn,tensorboard,mlflow,docs

.DEFAULT_GOAL := help
.PHONY: help install test test-fast check check-format check-style check-types format fuzz train record smoke eval bench download serve docs docs-serve clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# Two stamps: training needs only the package and its core dependencies; the tests need
# every extra (plots, export, serving, sweeps, the scikit-learn estimator) and the dev tools.
$(VENV)/.core: pyproject.toml setup.py mnist_mlp/fast/_kernels.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.full: $(VENV)/.core
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $@

install: $(VENV)/.full  ## create .venv with the package, every extra and the dev tools

test: install  ## run the whole test suite (real-data tests need MNIST_MLP_MIRROR)
	$(BIN)/python -m pytest

test-fast: install  ## the tests that need no real data
	$(BIN)/python -m pytest -m "not realdata"

check: check-format check-style check-types  ## every static check CI runs: formatting, lint, types

check-format: install  ## ruff format --check (make format fixes it)
	$(BIN)/ruff format --check .

check-style: install  ## ruff check: pycodestyle, pyflakes, import order, bugbear, ...
	$(BIN)/ruff check .

check-types: install  ## mypy over the package
	$(BIN)/mypy

fuzz: install  ## run every fuzz target for FUZZ_SECONDS (60) each, coverage-guided (atheris)
	@for t in idx image checkpoint config sweep api; do \
	  echo "fuzz $$t"; $(BIN)/python fuzz/run.py $$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done

format: install  ## reformat the tree and apply ruff's safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

download: $(VENV)/.core  ## fetch and verify MNIST and Fashion-MNIST into the cache
	$(BIN)/mlp download --dataset all

train: $(VENV)/.core  ## download MNIST if needed and train $(CONFIG) (default: configs/default.yaml)
	$(BIN)/mlp train --config $(CONFIG)

record: $(VENV)/.full  ## the committee into runs/record/committee, the distilled single net into runs/record/single, both test accuracies last (again: it continues)
	$(BIN)/python scripts/record.py $(if $(STORAGE),--storage $(STORAGE))

smoke: $(VENV)/.core  ## a training run of a few seconds, for first contact
	$(BIN)/mlp train --config configs/smoke.yaml

eval: $(VENV)/.core  ## evaluate the newest run's best checkpoint on the test set
	$(BIN)/mlp eval runs/latest/checkpoint.npz

serve: $(VENV)/.full  ## serve the newest run's model: a page to draw digits on, and a JSON API
	$(BIN)/mlp serve

bench: install  ## measure speed and memory on this machine
	$(BIN)/mlp bench

docs: install  ## build the documentation site into site/ (--strict: a broken link or reference fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: install  ## serve the documentation on 127.0.0.1:8001, rebuilt as files change
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

clean:  ## remove the venv and build leftovers (not the data cache, not runs/)
	rm -rf $(VENV) build site *.egg-info .pytest_cache mnist_mlp/fast/_kernels.*.so
