"""Throughput of the WeChat callback endpoint: signed plaintext vs AES (safe mode), side by side.

Starts the web app under gunicorn against the configured database and cache (DATABASE_URL / REDIS_URL, or
the embedded SQLite defaults), registers two benchmark accounts (one plaintext, one safe mode), then fires
N callbacks per mode from a thread pool — half ``subscribe`` events, half text messages, each from a new openid
so every request creates a follower and queues its profile fetch (the heaviest path) — and reports
requests/s, p50 and p99 per mode. A section with the exact command is appended to ``bench/RESULTS.md``.

Requests are built and signed (and in AES mode encrypted) before the clock starts, so the figures measure
the server. Run ``manage.py migrate`` first. Example::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/helper_j REDIS_URL=redis://127.0.0.1:6379/9 \\
        .venv/bin/python bench/callback_throughput.py --requests 2000 --concurrency 16
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shlex
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import requests
from cryptography.fernet import Fernet

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench._stack import free_port, load_average  # noqa: E402 -- importable once the project is on sys.path

RESULTS_FILE = BASE_DIR / "bench" / "RESULTS.md"
PLAINTEXT_APPID = "wxbe0c000000000001"
SAFE_APPID = "wxbe0c000000000002"
TOKEN = "benchcallbacktoken"
AES_KEY = "BenchKeyBenchKeyBenchKeyBenchKeyBenchKey123"
ORIGINAL_ID = "gh_bench00000001"


WARMUP_REQUESTS = 50


def server_environment() -> dict[str, str]:
    """The web app runs as in production (DEBUG off); only what DEBUG-off insists on is filled in.

    Computed once and shared by this process and gunicorn, so both use the same SECRET_KEY and encryption key.
    Served over plain HTTP on 127.0.0.1, so without the redirect to HTTPS.
    """
    env = dict(os.environ)
    env["DJANGO_DEBUG"] = "0"
    env.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    env.setdefault("WXNOTIFY_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    env.setdefault("WXNOTIFY_SSL_REDIRECT", "0")
    env["DJANGO_ALLOWED_HOSTS"] = "127.0.0.1"
    env.setdefault("WXNOTIFY_LOG_LEVEL", "WARNING")
    env.setdefault("DJANGO_SETTINGS_MODULE", "wxnotify.settings")
    return env


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    import django

    django.setup()


def register_accounts() -> None:
    from accounts.models import Follower, OfficialAccount

    for appid, mode in ((PLAINTEXT_APPID, "plaintext"), (SAFE_APPID, "safe")):
        account, _created = OfficialAccount.objects.update_or_create(
            appid=appid,
            defaults={
                "name": f"Benchmark {mode}",
                "app_secret": "bench-secret-not-used-by-callbacks",
                "token": TOKEN,
                "encoding_aes_key": AES_KEY,
                "message_mode": mode,
                "is_active": True,
            },
        )
        Follower.objects.filter(account=account).delete()


def remove_accounts() -> None:
    from accounts.models import OfficialAccount

    OfficialAccount.objects.filter(appid__in=[PLAINTEXT_APPID, SAFE_APPID]).delete()


def follower_count(appid: str) -> int:
    from accounts.models import Follower

    return Follower.objects.filter(account__appid=appid).count()


def start_gunicorn(port: int, workers: int, threads: int, env: dict[str, str]) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "wxnotify.wsgi:application",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]
    return subprocess.Popen(command, cwd=BASE_DIR, env=env)


def wait_until_up(base_url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited with {process.returncode}")
        try:
            requests.get(f"{base_url}/wechat/callback/wx0000000000000000/", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise SystemExit("gunicorn did not start in time")


@dataclass(frozen=True)
class PreparedRequest:
    url: str
    body: bytes


def message_xml(index: int, run_id: str) -> str:
    openid = f"oBench{run_id}{index:012d}"[:28]
    now = int(time.time())
    head = (
        f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{now}</CreateTime>"
    )
    if index % 2 == 0:
        return (
            head + "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey></EventKey></xml>"
        )
    msg_id = int(run_id, 16) * 10**7 + index
    return (
        head + f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hello]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )


def prepare(base_url: str, appid: str, encrypted: bool, count: int, run_id: str) -> list[PreparedRequest]:
    from wxnotify.wechat.crypto import CallbackCrypto, compute_signature

    crypto = CallbackCrypto(TOKEN, AES_KEY, appid)
    prepared = []
    for index in range(count):
        xml = message_xml(index, run_id)
        timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
        query = {"signature": compute_signature(TOKEN, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}
        body = xml
        if encrypted:
            encrypt = crypto.encrypt(xml)
            query.update(encrypt_type="aes", msg_signature=compute_signature(TOKEN, timestamp, nonce, encrypt))
            body = (
                f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
            )
        prepared.append(PreparedRequest(f"{base_url}/wechat/callback/{appid}/?{urlencode(query)}", body.encode()))
    return prepared


@dataclass(frozen=True)
class Result:
    mode: str
    count: int
    seconds: float
    latencies_ms: list[float]
    failures: int

    @property
    def rps(self) -> float:
        return self.count / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def fire(mode: str, prepared: list[PreparedRequest], concurrency: int) -> Result:
    local = threading.local()
    headers = {"Content-Type": "text/xml; charset=utf-8"}

    def send(request: PreparedRequest) -> tuple[float, bool]:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        started = time.perf_counter()
        response = session.post(request.url, data=request.body, headers=headers, timeout=10)
        elapsed_ms = (time.perf_counter() - started) * 1000
        return elapsed_ms, response.status_code == 200 and response.content == b"success"

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        outcomes = list(pool.map(send, prepared))
    seconds = time.perf_counter() - started
    return Result(
        mode=mode,
        count=len(prepared),
        seconds=seconds,
        latencies_ms=[latency for latency, _ok in outcomes],
        failures=sum(1 for _latency, ok in outcomes if not ok),
    )


def describe_stack() -> str:
    from django.conf import settings

    database = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    cache = settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]
    broker = "Redis" if settings.REDIS_URL else "ORM"
    return f"{database}, cache {cache}, django-q2 broker {broker}"


def report(results: list[Result], args: argparse.Namespace, command: str, loads: tuple[str, str]) -> str:
    lines = [
        f"## Callback throughput — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}`",
        "",
        f"Stack: {describe_stack()}; gunicorn {args.workers} workers x {args.threads} thread(s); "
        f"client: {args.concurrency} threads on the same machine; {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}; load average (1/5/15 min) {loads[0]} at start, {loads[1]} at end.",
        f"Each mode: {args.requests} callbacks, half `subscribe` events and half text messages, every one from a new "
        "openid (each creates a follower and queues its profile fetch).",
        "",
        "| mode | requests | failures | requests/s | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        lines.append(
            f"| {result.mode} | {result.count} | {result.failures} | {result.rps:.0f} | "
            f"{statistics.median(result.latencies_ms):.1f} | {result.percentile(0.99):.1f} | "
            f"{max(result.latencies_ms):.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="callbacks per mode (default 2000)")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads (default 16)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker (default 1: sync)")
    parser.add_argument("--no-results", action="store_true", help="print only, do not append to bench/RESULTS.md")
    args = parser.parse_args()
    command = shlex.join([os.path.relpath(sys.executable, Path.cwd()), *sys.argv])
    if os.environ.get("DATABASE_URL") or os.environ.get("REDIS_URL"):
        shown = " ".join(f"{name}={os.environ[name]}" for name in ("DATABASE_URL", "REDIS_URL") if os.environ.get(name))
        command = f"{shown} {command}"

    load_at_start = load_average()
    env = server_environment()
    setup_django(env)
    register_accounts()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = start_gunicorn(port, args.workers, args.threads, env)
    try:
        wait_until_up(base_url, server)
        results = []
        for mode, appid, encrypted in (("plaintext", PLAINTEXT_APPID, False), ("AES (safe mode)", SAFE_APPID, True)):
            run_id = secrets.token_hex(4)
            prepared = prepare(base_url, appid, encrypted, WARMUP_REQUESTS + args.requests, run_id)
            fire(mode, prepared[:WARMUP_REQUESTS], args.concurrency)  # warm-up: connections, lazy imports
            result = fire(mode, prepared[WARMUP_REQUESTS:], args.concurrency)
            results.append(result)
            created = follower_count(appid)
            if created != len(prepared):
                print(f"warning: {mode}: {created} followers for {len(prepared)} callbacks", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=30)
        remove_accounts()
    text = report(results, args, command, (load_at_start, load_average()))
    print(text)
    if not args.no_results:
        heading = "" if RESULTS_FILE.exists() else "# Benchmark results\n"
        with RESULTS_FILE.open("a", encoding="utf-8") as results_file:
            results_file.write(heading + "\n" + text)
    return 0 if all(result.failures == 0 for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
