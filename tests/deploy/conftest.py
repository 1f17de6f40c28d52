"""What the deployment tests need from the machine: nginx and openssl, installed when possible.

CI (``CI=true``) installs nginx in ``.ci/run`` (``ensure_nginx``), so there a missing tool fails the test.  Elsewhere,
as root, the test session tries ``apt-get install``, as the browser set-up does; otherwise the tests are skipped with
one reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

# Debian's nginx-light became a transitional package for nginx; either gives /usr/sbin/nginx.
PACKAGES = {"nginx": ["nginx-light", "nginx"], "openssl": ["openssl"]}
SBIN_PATH = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"


def find_tool(name: str) -> str | None:
    return shutil.which(name, path=SBIN_PATH)


def apt_install(package: str) -> bool:
    command = ["apt-get", "install", "-y", "--no-install-recommends", package]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(command, env=env, capture_output=True, check=False).returncode == 0:
        return True
    subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
    return subprocess.run(command, env=env, capture_output=True, check=False).returncode == 0


def install(name: str) -> str | None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    for package in PACKAGES[name]:
        if apt_install(package) and (path := find_tool(name)):
            return path
    return None


@pytest.fixture(scope="session")
def deploy_tools() -> dict[str, str]:
    """Paths of nginx and openssl; installs them when missing and possible, else fails in CI and skips elsewhere."""
    tools = {name: find_tool(name) or install(name) for name in PACKAGES}
    missing = sorted(name for name, path in tools.items() if path is None)
    if missing:
        reason = f"{' and '.join(missing)} missing (apt-get install -y nginx openssl, as .ci/run does)"
        if os.environ.get("CI", "").lower() in {"1", "true"}:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return tools
