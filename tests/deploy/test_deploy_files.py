"""deploy/ agrees with the code: the environment example names every setting the app reads, nginx's body limits are
the app's own, the units run what the README says, and systemd accepts them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from messaging.api.parsers import BULK_BODY_MAX_BYTES
from tests.deploy.stack import BASE_DIR, DEPLOY, replaced

SETTINGS_FILES = [BASE_DIR / "wxnotify" / "settings.py", BASE_DIR / "gunicorn.conf.py"]
READ_RE = re.compile(r"""(?:os\.environ\.get|os\.environ\[|env_int|env_bool|env_list)\(?\s*["']([A-Z][A-Z0-9_]*)["']""")
UNITS = sorted((DEPLOY / "systemd").iterdir())
NGINX_SITE = (DEPLOY / "nginx" / "wxnotify.conf").read_text()
SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024}


def variables_read() -> set[str]:
    return {name for path in SETTINGS_FILES for name in READ_RE.findall(path.read_text())}


def variables_documented() -> set[str]:
    text = (DEPLOY / "wxnotify.env.example").read_text()
    return set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def test_the_env_example_lists_every_setting_the_app_reads():
    read = variables_read()
    assert {"DJANGO_SECRET_KEY", "WXNOTIFY_ENCRYPTION_KEYS", "FORWARDED_ALLOW_IPS"} <= read  # the pattern still works
    assert read - variables_documented() == set(), "add these to deploy/wxnotify.env.example"
    assert variables_documented() - read == set(), "the app no longer reads these"


def body_limit(location: str | None) -> int:
    """client_max_body_size of a location of the nginx site, or of the server block itself (None), in bytes."""
    if location is None:
        block = re.sub(r"location [^{]*\{[^}]*\}", "", NGINX_SITE.split("listen 443 ssl;", 1)[1])
    else:
        block = re.search(rf"location {re.escape(location)} \{{([^}}]*)\}}", NGINX_SITE).group(1)
    number, unit = re.search(r"client_max_body_size (\d+)([km]?);", block).groups()
    return int(number) * SIZE_UNITS[unit]


def test_nginx_lets_through_exactly_what_the_app_takes():
    assert body_limit(None) == settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert body_limit("/api/") == BULK_BODY_MAX_BYTES
    assert body_limit("/wechat/callback/") == settings.WECHAT_CALLBACK_MAX_BODY_BYTES
    # Whatever nginx lets through and a view leaves unread is read before the answer.
    assert max(body_limit(None), body_limit("/api/")) <= settings.WXNOTIFY_UNREAD_BODY_DRAIN_BYTES


def unit(name: str) -> str:
    return (DEPLOY / "systemd" / name).read_text()


def test_the_units_run_the_services_the_readme_describes():
    web, worker = unit("wxnotify-web.service"), unit("wxnotify-worker.service")
    assert "gunicorn wxnotify.wsgi --config /opt/wxnotify/gunicorn.conf.py --bind 127.0.0.1:8000" in web
    assert "server 127.0.0.1:8000;" in NGINX_SITE
    assert "ExecStart=/opt/wxnotify/.venv/bin/python manage.py qcluster" in worker
    assert "manage.py clear_metrics" in unit("wxnotify-clear-metrics.service")
    for path in UNITS:
        if path.suffix == ".service":
            text = path.read_text()
            assert "EnvironmentFile=/etc/wxnotify/wxnotify.env\n" in text and "PartOf=wxnotify.target\n" in text, path
            assert "WorkingDirectory=/opt/wxnotify\n" in text and "User=wxnotify\n" in text, path
    # django-q2's scheduler runs inside qcluster: no timer unit.
    assert not [path for path in UNITS if path.suffix == ".timer"]
    assert settings.Q_CLUSTER.get("scheduler", True)


def test_systemd_accepts_the_units(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is missing")
    # The units as installed at this checkout: only paths change, so that systemd finds the programs.
    paths = {
        "/opt/wxnotify/.venv/bin": str(Path(sys.executable).parent),
        "/opt/wxnotify": str(BASE_DIR),
        "/etc/wxnotify/wxnotify.env": str(DEPLOY / "wxnotify.env.example"),
    }
    for path in UNITS:
        text = path.read_text()
        (tmp_path / path.name).write_text(replaced(text, {old: new for old, new in paths.items() if old in text}))
    result = subprocess.run(
        [analyze, "verify", "--man=no", *sorted(str(path) for path in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
