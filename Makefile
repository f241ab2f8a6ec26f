# One command per habit.
PY ?= python

.PHONY: install test lint typecheck check bench chaos up

install:
	$(PY) -m pip install -e '.[dev]'

test:
	$(PY) -m pytest

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	lint-imports

typecheck:
	$(PY) -m mypy

check: lint typecheck test

bench:
	$(PY) -m bench

chaos:
	$(PY) -m bench.chaos

up:
	walrus up
