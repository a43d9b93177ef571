# One-command entry points. PYTHON picks the interpreter used to create the virtual environment.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= test,serve,eval,data,deepspeed,wandb

.PHONY: setup test test-all quickstart clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q

test-all: setup
	EAGLE_SLOW=1 $(PY) -m pytest -q

quickstart: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/quickstart.sh $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
