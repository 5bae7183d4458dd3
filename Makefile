# The two set-up commands (README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test docs-screenshot

demo: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/bench demo

test: $(VENV)/.installed-dev
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q --durations=25

# Regenerates docs/leaderboard.png: the browser test's screenshot of a site built from test runs (needs chromium).
docs-screenshot: $(VENV)/.installed-dev
	HF_HUB_OFFLINE=1 BENCH_SCREENSHOT=docs/leaderboard.png $(BIN)/python -m pytest -q tests/test_leaderboard.py -k browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) torch==2.13.0
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]"
	touch $@ $(VENV)/.installed
