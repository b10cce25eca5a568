# The two set-up commands of the README. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml requirements-lock.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements-lock.txt torch torchvision
	$(BIN)/pip install -q -c requirements-lock.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/leanvision demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/lint-imports --no-cache  # the layer contract of pyproject.toml (ARCHITECTURE.md)

clean:
	rm -rf $(VENV) runs demo_out .pytest_cache
