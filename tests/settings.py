"""Test settings: the real settings with tasks run inline and a fast password hasher."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("DJANGO_DEBUG", "1")
# Metrics of this test run only: concurrent runs must not add to each other's counters (see below for cleanup).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", f"{tempfile.gettempdir()}/wxnotify-test-metrics-{os.getpid()}")
os.environ.setdefault("WXNOTIFY_TASKS_SYNC", "1")
os.environ.setdefault("WECHAT_API_BASE", "http://127.0.0.1:9")
# Tasks run inline: a delivery task must not linger for new work or wait for retries due later, so each test sees
# one step of the pipeline at a time.  Tests of waiting turn these back on.
os.environ.setdefault("WXNOTIFY_DELIVERY_IDLE_SECONDS", "0")
os.environ.setdefault("WXNOTIFY_RETRY_WAIT_HORIZON_SECONDS", "0")
# pytest-django runs tests with DEBUG off, where /metrics and the details of /healthz need a token: tests of what they
# show read them openly; tests/operations/test_endpoint_access.py turns this off to test who may read them.
os.environ.setdefault("WXNOTIFY_METRICS_PUBLIC", "1")

from wxnotify.settings import *  # noqa: F403

if WXNOTIFY_METRICS_DIR.name == f"wxnotify-test-metrics-{os.getpid()}":  # noqa: F405
    atexit.register(shutil.rmtree, WXNOTIFY_METRICS_DIR, ignore_errors=True)  # noqa: F405

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Concurrent test runs on one machine must not share a SQLite test database file.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": VAR_DIR / f"test-wxnotify-{os.getpid()}.sqlite3"}  # noqa: F405
