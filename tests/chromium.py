"""Debian's chromium for the browser tests: where it is, how it is launched, and what happens without it.

No ``playwright install``: the browser is the system's ``/usr/bin/chromium`` (``apt-get install chromium
fonts-wqy-zenhei``; ``.ci/run`` installs it).
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


def require_chromium() -> None:
    """Fail the test when chromium is missing, or skip it where ``WXNOTIFY_SKIP_BROWSER=1`` outside CI.

    CI installs the browser (.ci/run), so there a missing one is always a failure.
    """
    if CHROMIUM.exists():
        return
    in_ci = os.environ.get("CI", "").lower() in {"1", "true"}
    if os.environ.get(SKIP_ENV) == "1" and not in_ci:
        pytest.skip(f"{CHROMIUM} is missing and {SKIP_ENV}=1: browser tests skipped")
    pytest.fail(
        f"{CHROMIUM} is missing: install it with `apt-get install -y chromium fonts-wqy-zenhei` "
        f"(.ci/run does), or set {SKIP_ENV}=1 to skip the browser tests on this machine.",
        pytrace=False,
    )
