# wxnotify: every target sets itself up on a fresh machine (Debian with python3.11), so
# `make demo` and `make test` are the only two commands a newcomer needs.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
# Re-installing is skipped unless a requirements file is newer than this stamp.
STAMP := $(VENV)/.requirements.stamp
# Extra arguments for pytest, e.g. `make test ARGS="-k tokens -x"`.
ARGS ?=

# The interpreter that creates the venv: python3.11, else python3 when it is 3.11 or newer.
BOOTSTRAP_PYTHON ?= $(shell for p in python3.11 python3; do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; \
	then echo $$p; break; fi; done)

.PHONY: help venv test demo lint format migrate clean distclean

help:
	@echo "make demo      run the whole service locally against the WeChat sandbox (http://127.0.0.1:8000/admin/)"
	@echo "make test      run the test suite (SQLite by default; PostgreSQL/Redis when DATABASE_URL/REDIS_URL are set)"
	@echo "make lint      ruff check + ruff format --check"
	@echo "make format    ruff format + ruff check --fix"
	@echo "make migrate   apply database migrations"
	@echo "make clean     remove caches and test databases (keeps .venv and the demo database)"
	@echo "make distclean clean, and remove .venv and var/"

$(PY):
	@if [ -z "$(BOOTSTRAP_PYTHON)" ]; then echo "error: need python3.11 (or a python3 >= 3.11) to create $(VENV)" >&2; exit 1; fi
	$(BOOTSTRAP_PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
		echo "error: '$(BOOTSTRAP_PYTHON) -m venv' failed (on Debian's own Python: apt-get install python3-venv)" >&2; exit 1; }

$(STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check --quiet -r requirements-dev.txt
	@touch $@

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

demo: $(STAMP)
	DJANGO_DEBUG=1 $(PY) manage.py run_demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

migrate: $(STAMP)
	$(PY) manage.py migrate

clean:
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache .hypothesis test-artifacts
	rm -f var/test-*.sqlite3 var/test-*.sqlite3-wal var/test-*.sqlite3-shm var/test-*.sqlite3-journal

distclean: clean
	rm -rf $(VENV) var
