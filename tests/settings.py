"""Test settings: the real settings with tasks run inline and a fast password hasher.

Runs share nothing: not concurrent runs on one machine, nor the pytest-xdist workers of one run (``make test`` runs
several).  pytest-django gives each worker a test database of its own; below, each worker also gets its own SQLite
file, Redis database and metrics directory.  What is decided here goes into the environment, so a process a test
starts (``DJANGO_SETTINGS_MODULE=tests.settings``) uses the same ones as the worker that started it.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# "gw0", "gw1", ... in a pytest-xdist worker (and in the processes it starts); unset in a run without workers.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
WORKER_INDEX = int(WORKER.removeprefix("gw")) if WORKER else 0
# The first process of this test run (pytest itself, the xdist controller): every process below it inherits it.
RUN = os.environ.setdefault("WXNOTIFY_TEST_RUN", str(os.getpid()))


def worker_redis_url(url: str) -> str:
    """The Redis database numbered REDIS_URL's plus the worker's index: a worker's cache.clear() (FLUSHDB) must not
    empty another's cache.  With four workers, REDIS_URL=redis://host/3 uses databases 3 to 6."""
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{base + WORKER_INDEX}"))


# REDIS_URL as the run was started with; a worker's processes inherit the worker's URL and keep it.
REDIS_BASE_URL = os.environ.setdefault("WXNOTIFY_TEST_REDIS_BASE_URL", os.environ.get("REDIS_URL", ""))
if REDIS_BASE_URL and os.environ.get("REDIS_URL") == REDIS_BASE_URL:
    os.environ["REDIS_URL"] = worker_redis_url(REDIS_BASE_URL)

os.environ.setdefault("DJANGO_DEBUG", "1")
# Metrics of this run and worker only: concurrent runs and workers must not add to each other's counters.
METRICS_PREFIX = f"{tempfile.gettempdir()}/wxnotify-test-metrics-{RUN}"
if os.environ.get("PROMETHEUS_MULTIPROC_DIR", METRICS_PREFIX).startswith(METRICS_PREFIX):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = f"{METRICS_PREFIX}-{WORKER or 'main'}"
os.environ.setdefault("WXNOTIFY_TASKS_SYNC", "1")
os.environ.setdefault("WECHAT_API_BASE", "http://127.0.0.1:9")
# Tasks run inline: a delivery task must not linger for new work or wait for retries due later, so each test sees
# one step of the pipeline at a time.  Tests of waiting turn these back on.
os.environ.setdefault("WXNOTIFY_DELIVERY_IDLE_SECONDS", "0")
os.environ.setdefault("WXNOTIFY_RETRY_WAIT_HORIZON_SECONDS", "0")
# pytest-django runs tests with DEBUG off, where /metrics and the details of /healthz need a token: tests of what they
# show read them openly; tests/operations/test_endpoint_access.py turns this off to test who may read them.
os.environ.setdefault("WXNOTIFY_METRICS_PUBLIC", "1")

from wxnotify.settings import *  # noqa: E402, F403


def _remove_metrics_dirs() -> None:
    for path in Path(METRICS_PREFIX).parent.glob(f"{Path(METRICS_PREFIX).name}-*"):
        shutil.rmtree(path, ignore_errors=True)


# The run's first process ends last: it removes every worker's metrics directory.
if str(os.getpid()) == RUN:
    atexit.register(_remove_metrics_dirs)

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Concurrent test runs on one machine must not share a SQLite test database file (pytest-xdist adds "_gw0", ...).
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": VAR_DIR / f"test-wxnotify-{os.getpid()}.sqlite3"}  # noqa: F405
