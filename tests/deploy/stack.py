"""The deployment of deploy/ on one machine, in temporary directories: gunicorn as wxnotify-web.service starts it,
on the environment of deploy/wxnotify.env.example, behind nginx running deploy/nginx/wxnotify.conf.

Only paths, ports and secrets are replaced (and each replaced text must be found), so what runs is what ships.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.servers import LOCALHOST, free_port

BASE_DIR = Path(__file__).resolve().parents[2]
DEPLOY = BASE_DIR / "deploy"
SERVER_NAME = "notify.example.com"
# The variables of the example the test sets to its own values; the other uncommented lines are used as they are.
OWN_VALUES = (
    "DJANGO_SECRET_KEY",
    "WXNOTIFY_ENCRYPTION_KEYS",
    "WXNOTIFY_METRICS_TOKEN",
    "DATABASE_URL",
    "REDIS_URL",
    "WXNOTIFY_VAR_DIR",
)


def env_example() -> dict[str, str]:
    """The uncommented NAME=value lines of deploy/wxnotify.env.example."""
    lines = (DEPLOY / "wxnotify.env.example").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return {name: value for name, value in pairs}


def replaced(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        if old not in text:
            raise AssertionError(f"{old!r} is no longer in the shipped file: update the deployment test")
        text = text.replace(old, new)
    return text


def unit_command(unit: str, replacements: dict[str, str]) -> list[str]:
    """ExecStart of a shipped systemd unit, with its paths and ports replaced."""
    text = (DEPLOY / "systemd" / unit).read_text()
    (line,) = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    return shlex.split(replaced(line.removeprefix("ExecStart="), replacements))


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def wait_for_port(port: int, process: subprocess.Popen, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection((LOCALHOST, port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                detail = log.read_text()[-2000:] if log and log.exists() else ""
                raise RuntimeError(f"{what} did not start\n{detail}") from None
            time.sleep(0.1)


@contextmanager
def running(
    command: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(command, env=env, cwd=cwd)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Deployment:
    https_port: int
    http_port: int
    gunicorn_port: int
    certificate: Path
    static_root: Path

    @property
    def https(self) -> str:
        return f"https://{LOCALHOST}:{self.https_port}"


def make_certificate(openssl: str, directory: Path) -> tuple[Path, Path]:
    """A throw-away self-signed certificate for the server name and 127.0.0.1 (clients verify against it)."""
    certificate, key = directory / "fullchain.pem", directory / "privkey.pem"
    command = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={SERVER_NAME}"]
    command += ["-addext", f"subjectAltName=DNS:{SERVER_NAME},IP:{LOCALHOST}", "-keyout", key, "-out", certificate]
    subprocess.run(command, check=True, capture_output=True)
    return certificate, key


def nginx_config(directory: Path, site: str) -> Path:
    """A main nginx.conf around the shipped site, as Debian's /etc/nginx/nginx.conf includes sites-enabled."""
    (directory / "site.conf").write_text(site)
    temp_paths = "\n".join(
        f"    {kind}_temp_path {directory / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    mime_types = "    include /etc/nginx/mime.types;\n" if Path("/etc/nginx/mime.types").exists() else ""
    # As root, nginx's workers would run as nobody, who cannot read the temporary directories.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    config = directory / "nginx.conf"
    config.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'};\n"
        f"events {{\n    worker_connections 64;\n}}\nhttp {{\n{mime_types}    default_type application/octet-stream;\n"
        f"    access_log {directory / 'access.log'};\n{temp_paths}\n    include {directory / 'site.conf'};\n}}\n"
    )
    return config


@contextmanager
def deployment(*, tools: dict[str, str], directory: Path, app_env: dict[str, str]) -> Iterator[Deployment]:
    """collectstatic, gunicorn and nginx, as the README's "Production" section sets them up."""
    https_port, http_port, gunicorn_port = free_port(), free_port(), free_port()
    static_root = directory / "static"
    env = {
        **{name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ},
        **{name: value for name, value in env_example().items() if name not in OWN_VALUES},
        "DJANGO_SETTINGS_MODULE": "wxnotify.settings",
        "DJANGO_STATIC_ROOT": str(static_root),
        "WXNOTIFY_VAR_DIR": str(directory / "var"),
        "WXNOTIFY_LOG_LEVEL": "WARNING",
        **app_env,
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"], cwd=BASE_DIR, env=env, check=True
    )
    venv_bin = str(Path(sys.executable).parent)
    gunicorn = unit_command(
        "wxnotify-web.service",
        {
            "/opt/wxnotify/.venv/bin": venv_bin,
            "/opt/wxnotify": str(BASE_DIR),
            "127.0.0.1:8000": f"127.0.0.1:{gunicorn_port}",
            "/run/wxnotify-web": str(directory),
        },
    )
    certificate, key = make_certificate(tools["openssl"], directory)
    site_replacements = {
        "listen 80;": f"listen {LOCALHOST}:{http_port};",
        "listen 443 ssl;": f"listen {LOCALHOST}:{https_port} ssl;",
        "listen [::]:80;": f"listen [::1]:{http_port};" if ipv6_loopback() else "",
        "listen [::]:443 ssl;": f"listen [::1]:{https_port} ssl;" if ipv6_loopback() else "",
        "/etc/ssl/wxnotify/fullchain.pem": str(certificate),
        "/etc/ssl/wxnotify/privkey.pem": str(key),
        "/var/www/wxnotify/static/": f"{static_root}/",
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{gunicorn_port};",
    }
    site = replaced((DEPLOY / "nginx" / "wxnotify.conf").read_text(), site_replacements)
    config = nginx_config(directory, site)
    nginx = [tools["nginx"], "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(config)]
    with ExitStack() as stack:
        web = stack.enter_context(running(gunicorn, env=env, cwd=BASE_DIR))
        wait_for_port(gunicorn_port, web, "gunicorn")
        proxy = stack.enter_context(running(nginx))
        wait_for_port(https_port, proxy, "nginx", directory / "error.log")
        yield Deployment(https_port, http_port, gunicorn_port, certificate, static_root)
