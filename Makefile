# wxnotify: every target sets itself up on a fresh machine (Debian with python3.11), so
# `make demo` and `make test` are the only two commands a newcomer needs.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
# Re-installing is skipped unless the lock file is newer than this stamp.
STAMP := $(VENV)/.requirements.stamp
# requirements*.txt name what the project uses; the lock files pin every package, transitive ones, pip and
# setuptools included, with the hash of every file PyPI has for it.  `make lock` writes them from the .txt files.
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
# Extra pip-compile options for `make lock`, e.g. LOCK_ARGS=--upgrade (newest versions the .txt pins allow) or
# LOCK_ARGS="--upgrade-package certifi".
LOCK_ARGS ?=
# Extra arguments for pytest, e.g. `make test ARGS="-k tokens -x"`.
ARGS ?=
# The suite runs in parallel (pytest-xdist): a worker per core, at most 4, each with its own test database, Redis
# database (REDIS_URL's number + the worker's index) and metrics directory (tests/settings.py).  ARGS=-n0 runs it
# in one process.
XDIST := --numprocesses=auto --maxprocesses=4

# The interpreter that creates the venv: python3.11, else python3 when it is 3.11 or newer.
BOOTSTRAP_PYTHON ?= $(shell for p in python3.11 python3; do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; \
	then echo $$p; break; fi; done)

.PHONY: help venv test test-fast demo lint format migrate audit lock clean distclean

help:
	@echo "make demo      run the whole service locally against the WeChat sandbox (http://127.0.0.1:8000/admin/)"
	@echo "make test      run the whole test suite in parallel (SQLite by default; PostgreSQL/Redis when DATABASE_URL/"
	@echo "               REDIS_URL are set); installs chromium for the browser tests first when it can (root, apt-get)"
	@echo "make test-fast the inner loop: make test without the browser tests and the tests that start processes (slow)"
	@echo "make lint      ruff check + ruff format --check + lint-imports (the import contracts in pyproject.toml)"
	@echo "make format    ruff format + ruff check --fix"
	@echo "make migrate   apply database migrations"
	@echo "make audit     check every locked dependency against the known-vulnerability services (pip-audit)"
	@echo "make lock      rewrite requirements.lock / requirements-dev.lock (with hashes) from requirements*.txt"
	@echo "make clean     remove caches and test databases (keeps .venv and the demo database)"
	@echo "make distclean clean, and remove .venv and var/"

$(PY):
	@if [ -z "$(BOOTSTRAP_PYTHON)" ]; then echo "error: need python3.11 (or a python3 >= 3.11) to create $(VENV)" >&2; exit 1; fi
	$(BOOTSTRAP_PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
		echo "error: '$(BOOTSTRAP_PYTHON) -m venv' failed (on Debian's own Python: apt-get install python3-venv)" >&2; exit 1; }

# Hash-checking mode: a file whose hash is not in the lock is refused, and so is any package the lock does not pin.
# The locked pip goes in first, on its own: the pip a new venv bundles (23.2 with Python 3.11.7) refuses a
# locked package asked for with an extra (pip-audit's CacheControl[filecache]) in hash-checking mode.
$(STAMP): $(DEV_LOCK) | $(PY)
	awk '/^pip==/ {p=1; print; next} p && /^ +--hash/ {print; next} {p=0}' $(DEV_LOCK) > $(VENV)/pip.lock
	$(PY) -m pip install --disable-pip-version-check --quiet --require-hashes --no-deps -r $(VENV)/pip.lock
	$(PY) -m pip install --disable-pip-version-check --quiet --require-hashes -r $(DEV_LOCK)
	@touch $@

venv: $(STAMP)

# tools/ensure_browser installs chromium and the CJK font for the browser tests when it can (root with apt-get) and
# never fails; where it cannot, pytest leaves those tests out with one line in its summary (not in CI).
test: $(STAMP)
	@tools/ensure_browser
	$(PY) -m pytest $(XDIST) $(ARGS)

# The inner loop: everything but the browser tests and the tests that start processes (marked slow).
test-fast: $(STAMP)
	$(PY) -m pytest $(XDIST) -m "not slow and not browser" $(ARGS)

demo: $(STAMP)
	DJANGO_DEBUG=1 $(PY) manage.py run_demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

migrate: $(STAMP)
	$(PY) manage.py migrate

audit: $(STAMP)
	$(PY) tools/audit_dependencies.py $(DEV_LOCK)

# Resolved against PyPI alone, whatever pip configuration this machine adds (a local mirror's files would put
# hashes in the lock that no other machine can match).  The dev lock is constrained by the runtime one, so both
# pin the same versions.
lock: $(STAMP)
	env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
		$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links $(LOCK_ARGS) --output-file $(LOCK) requirements.txt
	env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
		$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links $(LOCK_ARGS) --constraint $(LOCK) --output-file $(DEV_LOCK) requirements-dev.txt

clean:
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache .import_linter_cache .hypothesis test-artifacts
	rm -f var/test-*.sqlite3*

distclean: clean
	rm -rf $(VENV) var
