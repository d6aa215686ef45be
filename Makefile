# l3seg: two commands from a fresh clone
#   make run    set up .venv and run the whole pipeline on the built-in data (params/default.yaml)
#   make test   set up .venv and run every test (unit, end-to-end, nbval notebooks)
# Other targets: make setup, make run PARAMS=params/quick.yaml, make bench, make lab, make clean

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PARAMS ?= params/default.yaml
STAMP := $(VENV)/.installed

.PHONY: setup run test bench lab clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# CPU build of torch from the local wheel; never a CUDA build from the index
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[train,dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/l3seg run --params $(PARAMS)

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/bench_training.py

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf $(VENV) runs reports/*/ *.egg-info .pytest_cache
