# make run   : set up (virtual environment + editable install) and run the default experiment
# make test  : set up and run the test suite
# make bench : runner overhead and method cost, printed as ratios
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: install run test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import sparsity_bench, torch, torchvision, hydra"
	touch $@

run: install
	$(PY) -m sparsity_bench $(ARGS)

test: install
	$(PY) -m pytest $(ARGS)

bench: install
	$(PY) scripts/bench.py $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
