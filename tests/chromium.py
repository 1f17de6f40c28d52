"""Debian's chromium for the browser tests: where it is, how it is launched, and what happens without it.

No ``playwright install``: the browser is the system's ``/usr/bin/chromium`` (``apt-get install chromium
fonts-wqy-zenhei``; ``make test`` runs ``tools/ensure_browser``, which installs them when it can, and so does
``.ci/run``).  Tests marked ``browser`` (all of ``tests/browser``, marked by ``tests/conftest.py``) need it.

Where the browser is missing, or ``WXNOTIFY_SKIP_BROWSER=1``, those tests are deselected and the run's summary says
so in one line with how to enable them: a machine that cannot have a browser still runs everything else.  In CI
(``CI=true``) nothing is left out: a missing browser fails the browser tests, as the browser is part of CI's set-up.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SKIP_ENV = "WXNOTIFY_SKIP_BROWSER"
INSTALL = "apt-get install -y --no-install-recommends chromium fonts-wqy-zenhei"
# How many browser tests this process left out; an xdist worker also reports it to the controller under this name.
DESELECTED = "browser_tests_deselected"
_deselected_key = pytest.StashKey[int]()


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true"}


def why_not_run() -> str | None:
    """Why the browser tests are left out of this run, or None when they run (always in CI)."""
    if in_ci():
        return None
    if os.environ.get(SKIP_ENV) == "1":
        return f"{SKIP_ENV}=1; unset it to run them"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing; to run them: `{INSTALL}` as root (`make test` does it when run as root)"
    return None


def require_chromium() -> None:
    """Fail the test when chromium is missing: outside CI such a test is deselected before it gets here."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install it with `{INSTALL}` (.ci/run does).", pytrace=False)


def deselect_browser_tests(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the tests marked ``browser`` when they cannot run here, and count them for the summary line."""
    if why_not_run() is None:
        return
    kept = [item for item in items if item.get_closest_marker("browser") is None]
    left_out = [item for item in items if item.get_closest_marker("browser") is not None]
    if not left_out:
        return
    items[:] = kept
    config.hook.pytest_deselected(items=left_out)
    config.stash[_deselected_key] = len(left_out)
    if hasattr(config, "workeroutput"):
        config.workeroutput[DESELECTED] = len(left_out)


def record_worker_count(config: pytest.Config, worker_output: dict) -> None:
    """On the xdist controller: every worker collects the whole suite, so each reports the same count."""
    if DESELECTED in worker_output:
        config.stash[_deselected_key] = worker_output[DESELECTED]


def summary_line(config: pytest.Config) -> str | None:
    """The one line the run's summary gets when browser tests were left out."""
    count = config.stash.get(_deselected_key, 0)
    reason = why_not_run()
    if not count or reason is None:
        return None
    return f"{count} browser tests not run: {reason}"
