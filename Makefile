# l3seg: two commands from a fresh clone
#   make run    set up .venv and run the whole pipeline on the built-in data (params/default.yaml)
#   make test   set up .venv and run every test (unit, end-to-end, nbval notebooks)
#   make test-fast   the quick lane while editing (about 2 minutes on 2 cores): no slow or heavy tests
# Other targets: make setup, make run PARAMS=params/quick.yaml, make bench, make lab, make clean

PYTHON ?= $(shell command -v python3.11 || command -v python3)
# Which torch build `make setup` installs is pip's choice: where pip is configured with local CPU
# wheels (as on the development machine) it takes those; elsewhere `pip install torch==2.13.0`
# from PyPI gives the CUDA build on Linux x86_64 (several GB of CUDA libraries). For the CPU
# build from PyTorch's own index: make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
PARAMS ?= params/default.yaml
STAMP := $(VENV)/.installed

# The fast lane leaves out the tests marked `slow` (training, the notebook pipeline) and `heavy`
# (the real-CT localiser and evaluation suites, the notebook runner, the localiser's sweeps, the
# locate command, the search-resume check, the import-cycle check in fresh interpreters); the
# markers are declared in pyproject.toml. `make test` runs them all.
FAST_ARGS := -m "not slow and not heavy" -q

.PHONY: setup run test test-fast bench lab clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first: the build pip's configuration gives (see TORCH_INDEX above)
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[train,dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/l3seg run --params $(PARAMS)

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest $(FAST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/bench_training.py

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf $(VENV) runs reports/*/ *.egg-info .pytest_cache
