# gdmix developer tasks. Every target creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(abspath ../shared/data)
export GDMIX_DATA_DIR ?= $(DATA_DIR)
export NUMBA_CACHE_DIR ?= $(abspath .numba_cache)

.PHONY: install demo test lint format bench clean

$(BIN)/gdmix: pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,deep,dask,serve,report,avro]"
	touch $(BIN)/gdmix

install: $(BIN)/gdmix

demo: install
	$(BIN)/python examples/movielens_100k.py

test: install
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

format: install
	$(BIN)/ruff format src tests benchmarks examples
	$(BIN)/ruff check --fix src tests benchmarks examples

bench: install
	$(BIN)/python benchmarks/movielens.py

clean:
	rm -rf $(VENV) .numba_cache .pytest_cache .ruff_cache build src/*.egg-info
