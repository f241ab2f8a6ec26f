# One command per habit.
PY ?= python

.PHONY: install lock test lint typecheck docs check bench chaos security up

# Installs exactly the locked set (requirements/lock.txt), then this package without resolving.
install:
	$(PY) -m pip install -r requirements/lock.txt
	$(PY) -m pip install --no-deps -e .

# Moves the lock forward on purpose: newest versions within pyproject's ranges, then the checks.
lock:
	$(PY) -m uv pip compile pyproject.toml --extra dev --python-version 3.11 --universal \
		--upgrade -q -o requirements/lock.txt
	$(MAKE) install check

# The whole suite on 3 pytest-xdist workers, a test file per worker at a time (module clusters
# start once): tests mostly wait on processes, so 3 workers pay on 2 cores (docs/development.md).
# Then the state-layer tests again on a Redis Cluster of their own, where a script that touches
# two slots fails (docs/design.md, "Keys and slots").
test:
	$(PY) -m pytest -n 3 --dist loadfile
	$(PY) -m pytest -n 2 --state-on-cluster

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	lint-imports

typecheck:
	$(PY) -m mypy

# The documentation site (mkdocs.yml) into site/; --strict: a broken link or anchor fails.
docs:
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

check: lint typecheck docs test

bench:
	$(PY) -m bench

chaos:
	$(PY) -m bench.chaos

# The security probes: the attacks of the security review, as tests (pytest -m security).
security:
	$(PY) -m pytest -m security

up:
	walrus up
