# advlab: `make study` runs the seed study, `make test` runs the tests (`make test-fast`: all but the slow ones).
# Both create the virtual environment (.venv) and install advlab into it when it is missing.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BENCH_ARGS ?= --quick   # make bench BENCH_ARGS= for the full size
# The data root: ADVLAB_DATA when set, else the shared offline copy next to the repository when present, else ./data.
ADVLAB_DATA ?= $(if $(wildcard ../shared/data/cifar10/test.npz),$(abspath ../shared/data/cifar10),$(abspath data))
export ADVLAB_DATA

.PHONY: study test test-fast bench bench-eval install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $@

install: $(VENV)/.installed

study: $(VENV)/.installed
	$(PY) -m advlab +experiment=seed_study $(ARGS)

# On every core (pytest-xdist; each worker gets its share of the torch threads: tests/conftest.py).
test: $(VENV)/.installed
	$(PY) -m pytest -n auto $(PYTEST_ARGS)

# Everything but the tests marked slow (subprocesses, DDP, the browser, training beyond a few seconds).
test-fast: $(VENV)/.installed
	$(PY) -m pytest -n auto -m "not slow" $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) bench/attacks.py $(BENCH_ARGS)
	OMP_NUM_THREADS=1 $(PY) bench/training.py $(BENCH_ARGS)
	OMP_NUM_THREADS=1 $(PY) bench/evaluation.py $(BENCH_ARGS)
	$(PY) bench/speedrun.py $(BENCH_ARGS)

# Standard AutoAttack vs fast mode vs the original AutoAttack on the zoo (docs/autoattack.md)
bench-eval: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(PY) bench/evaluation.py $(BENCH_ARGS)

clean:
	rm -rf outputs multirun .pytest_cache
