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

``--receipt-burst`` measures something else: whether a burst of delivery receipts is applied, each exactly once.
N messages are stored as just sent by a campaign (status ``sent`` with their msgids), then N distinct AES
``TEMPLATESENDJOBFINISH`` receipts for them come from ``--concurrency`` clients at once, the way WeChat pushes them
after a big campaign.  Every answer is counted by kind (``success``, 503, 403, other); a request not answered
``success`` is then sent again unchanged (same query, same body) up to three more times, as WeChat retries; finally
the database tells how many messages became ``delivered`` and how many receipts were kept aside.  "Answered
success but not applied" is the loss the reliability issue found.  It runs on the embedded default (a scratch SQLite
database with the database cache) and, with ``--postgres``/``--redis``, on PostgreSQL + Redis, each with this
tree's code and, with ``--baseline-rev``, with the code of an older commit (exported with ``git archive``; the
database is migrated by this tree, a superset).  Receipts may be applied a moment after their answer (in batches, by
the workers, so give ``--qcluster``): the count waits until every message is delivered or nothing changed for
``--settle`` seconds, and says how long that took.  Each configuration also serves the same burst from a bare
reference under the same gunicorn shape (``bench/reference_callback.py``: signature, decryption, parsing,
``success``, nothing stored), the limit of the machine for that work, and each version's receipts/s is given as a
ratio of it.  Its section of ``bench/RESULTS.md`` is replaced::

    .venv/bin/python bench/callback_throughput.py --receipt-burst --qcluster --baseline-rev 72d82ac \\
        --postgres postgres://postgres@127.0.0.1:5432/bench_cb --redis redis://127.0.0.1:6379/3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
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

from bench._stack import (  # noqa: E402 -- importable once the project is on sys.path
    CpuMeter,
    backend_database,
    command_line,
    export_commit,
    flush_redis,
    load_average,
    recreate_database,
    this_tree,
    write_results_section,
)
from tests.servers import free_port  # noqa: E402

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


def wait_until_up(base_url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited with {process.returncode}")
        try:
            requests.get(f"{base_url}/wechat/callback/wx0000000000000000/", timeout=5)
            return
        except (requests.ConnectionError, requests.Timeout):
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
        return percentile(self.latencies_ms, fraction)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def fire(mode: str, prepared: list[PreparedRequest], concurrency: int) -> Result:
    kinds, latencies, seconds = post_all(prepared, concurrency, timeout=10)
    return Result(
        mode=mode,
        count=len(prepared),
        seconds=seconds,
        latencies_ms=latencies,
        failures=sum(1 for kind in kinds if kind != "success"),
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


# --- Receipt burst --------------------------------------------------------------------------------------------------

BURST_APPID = "wxbe0c000000000003"
BURST_TEMPLATE_ID = "bench-burst-template"
# Since the reference and the ratio joined it; the section of earlier runs ("## Callback receipt burst") stays as it is.
BURST_SECTION = "## Receipts at WeChat's pace"
# WeChat tries a callback three times in all when it gets no good answer; the benchmark allows one try more.
BURST_RETRIES = 3
RECEIPTS_PER_INSERT_METRIC = "wxnotify_callback_receipts_per_insert"
# WeChat waits 5 seconds for an answer, then gives up on that try.
WECHAT_TIMEOUT = 5


def burst_msgid(run: int, index: int) -> int:
    return 3_000_000_000_000 + run * 1_000_000 + index


def burst_openid(index: int) -> str:
    return f"oBurst{index:022d}"


def internal_prepare(count: int, run: int) -> dict:
    """In a child with the configuration's environment: N messages just sent by a campaign, nothing else left."""
    from django.core.cache import cache

    from accounts.models import OfficialAccount
    from callbacks.models import ProcessedCallback
    from messaging.models import DeliveryReceipt, Message
    from templates_app.models import MessageTemplate

    account, _created = OfficialAccount.objects.update_or_create(
        appid=BURST_APPID,
        defaults={
            "name": "Benchmark receipts",
            "app_secret": "bench-secret-not-used-by-callbacks",
            "token": TOKEN,
            "encoding_aes_key": AES_KEY,
            "message_mode": "safe",
            "is_active": True,
        },
    )
    template, _created = MessageTemplate.objects.get_or_create(
        account=account, template_id=BURST_TEMPLATE_ID, defaults={"title": "Burst", "content": "{{thing1.DATA}}"}
    )
    Message.objects.filter(account=account).delete()
    DeliveryReceipt.objects.filter(account=account).delete()
    ProcessedCallback.objects.filter(account=account).delete()
    Message.objects.bulk_create(
        Message(
            account=account,
            template=template,
            template_id_sent=BURST_TEMPLATE_ID,
            touser=burst_openid(index),
            client_msg_id=f"burst-{run}-{index}",
            status=Message.Status.SENT,
            msgid=burst_msgid(run, index),
        )
        for index in range(count)
    )
    cache.clear()
    return {"account": account.pk}


def internal_count(expected: int, settle: float) -> dict:
    """The messages by status once ``expected`` are delivered, or once nothing changed for ``settle`` seconds."""
    from django.db.models import Count

    from messaging.models import DeliveryReceipt, Message

    started = last_change = time.monotonic()
    statuses: dict[str, int] = {}
    while True:
        counted = dict(
            Message.objects.filter(account__appid=BURST_APPID).values_list("status").annotate(n=Count("id")).order_by()
        )
        now = time.monotonic()
        if counted != statuses:
            statuses, last_change = counted, now
        if statuses.get("delivered", 0) >= expected or now - last_change >= settle:
            break
        time.sleep(0.1)
    # Applied receipts stay a while as their own de-duplication records (since the receipts' one-INSERT path).
    receipts = DeliveryReceipt.objects.filter(account__appid=BURST_APPID).exclude(state="applied").count()
    return {"statuses": statuses, "receipts_kept_aside": receipts, "settled_seconds": last_change - started}


def run_internal(command: str, env: dict[str, str], cwd: Path, *args: str) -> dict:
    """Run one ``--internal`` step of this file in a child with ``env`` (settings differ per configuration)."""
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--internal", command, *args],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def receipt_xml(index: int, run: int) -> str:
    return (
        f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><FromUserName><![CDATA[{burst_openid(index)}]]>"
        f"</FromUserName><CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>{burst_msgid(run, index)}</MsgID>"
        "<Status><![CDATA[success]]></Status></xml>"
    )


def prepare_receipts(base_url: str, count: int, run: int) -> list[PreparedRequest]:
    from wxnotify.wechat.crypto import CallbackCrypto, compute_signature

    crypto = CallbackCrypto(TOKEN, AES_KEY, BURST_APPID)
    prepared = []
    for index in range(count):
        timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
        encrypt = crypto.encrypt(receipt_xml(index, run))
        query = {
            "signature": compute_signature(TOKEN, timestamp, nonce),
            "timestamp": timestamp,
            "nonce": nonce,
            "encrypt_type": "aes",
            "msg_signature": compute_signature(TOKEN, timestamp, nonce, encrypt),
        }
        body = f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        prepared.append(PreparedRequest(f"{base_url}/wechat/callback/{BURST_APPID}/?{urlencode(query)}", body.encode()))
    return prepared


def hold_sqlite_write_lock(var_dir: Path, seconds: float) -> None:
    """One second into the burst, hold SQLite's write lock for ``seconds`` (a stand-in for a long writer elsewhere:
    a campaign of many recipients accepted in one transaction, a bulk admin action, a stalled disk)."""
    import sqlite3

    time.sleep(1)
    connection = sqlite3.connect(var_dir / "wxnotify.sqlite3", isolation_level=None, timeout=30)
    try:
        connection.execute("BEGIN IMMEDIATE")
        time.sleep(seconds)
        connection.execute("COMMIT")
    finally:
        connection.close()


def answer_kind(status: int, content: bytes) -> str:
    if status == 200:
        return "success" if content == b"success" else "200 other"
    return str(status)


def post_all(
    prepared: list[PreparedRequest], concurrency: int, timeout: float = WECHAT_TIMEOUT
) -> tuple[list[str], list[float], float]:
    """Post every request from ``concurrency`` threads; each answer's kind, each latency (ms), the wall time."""
    local = threading.local()
    headers = {"Content-Type": "text/xml; charset=utf-8"}

    def send(request: PreparedRequest) -> tuple[str, float]:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        started = time.perf_counter()
        try:
            response = session.post(request.url, data=request.body, headers=headers, timeout=timeout)
            kind = answer_kind(response.status_code, response.content)
        except requests.RequestException as exc:
            kind = type(exc).__name__
        return kind, (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        outcomes = list(pool.map(send, prepared))
    return [kind for kind, _ms in outcomes], [ms for _kind, ms in outcomes], time.perf_counter() - started


@dataclass
class BurstResult:
    configuration: str
    version: str
    first_answers: dict[str, int]
    retries: int
    final_answers: dict[str, int]
    seconds: float
    p99_ms: float
    statuses: dict[str, int]
    receipts_kept_aside: int
    settled_seconds: float
    cpu: dict[str, float]
    reference: bool = False
    # Mean receipts per INSERT of the web processes' group commit (None: the code has no such metric, or reference).
    receipts_per_insert: float | None = None

    @property
    def lost(self) -> int:
        """Receipts answered ``success`` whose message is still waiting for one."""
        if self.reference:
            return 0
        return max(0, self.final_answers.get("success", 0) - self.statuses.get("delivered", 0))


def receipt_inserts(directory: Path) -> tuple[float, float]:
    """(receipts, INSERTs) of ``wxnotify_callback_receipts_per_insert`` so far in a PROMETHEUS_MULTIPROC_DIR."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    totals = {"_sum": 0.0, "_count": 0.0}
    for metric in registry.collect():
        if metric.name == RECEIPTS_PER_INSERT_METRIC:
            for sample in metric.samples:
                suffix = sample.name.removeprefix(RECEIPTS_PER_INSERT_METRIC)
                if suffix in totals:
                    totals[suffix] += sample.value
    return totals["_sum"], totals["_count"]


def tally(kinds: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def start_burst_server(
    code_dir: Path | None, port: int, env: dict[str, str], args: argparse.Namespace
) -> subprocess.Popen:
    """wxnotify of ``code_dir`` under its ``gunicorn.conf.py``, or (``None``) the bare reference with the same workers
    and threads, started from ``bench/`` so that no ``gunicorn.conf.py`` applies to it."""
    shape = ["--workers", str(args.workers), "--threads", str(args.threads), "--bind", f"127.0.0.1:{port}"]
    shape += ["--log-level", "warning"]
    stderr = subprocess.DEVNULL if args.quiet else None
    if code_dir is None:
        env = {
            **env,
            "REFERENCE_CALLBACK_TOKEN": TOKEN,
            "REFERENCE_CALLBACK_AES_KEY": AES_KEY,
            "REFERENCE_CALLBACK_APPID": BURST_APPID,
        }
        command = [sys.executable, "-m", "gunicorn", "reference_callback:application", "--pythonpath", str(BASE_DIR)]
        return subprocess.Popen(command + shape, cwd=BASE_DIR / "bench", env=env, stderr=stderr, process_group=0)
    command = [sys.executable, "-m", "gunicorn", "wxnotify.wsgi:application", "--config", "gunicorn.conf.py"]
    return subprocess.Popen(command + shape, cwd=code_dir, env=env, stderr=stderr, process_group=0)


def burst_meter(server: subprocess.Popen, workers: subprocess.Popen | None, database_url: str) -> CpuMeter:
    """CPU of the parts that serve the burst: gunicorn (master and workers), the qcluster, and the PostgreSQL
    backends of the benchmark's database (SQLite is inside the first two)."""
    parts = {"gunicorn": lambda pid, sample: sample.pgid == server.pid}
    if workers is not None:
        parts["qcluster"] = lambda pid, sample: sample.pgid == workers.pid
    if database_url:
        database = database_url.rsplit("/", 1)[-1].split("?")[0]
        titles: dict[int, str] = {}
        parts["postgres"] = lambda pid, sample: sample.name == "postgres" and backend_database(pid, titles) == database
    parts["client"] = lambda pid, sample: pid == os.getpid()
    return CpuMeter(parts)


def burst_once(
    configuration: str, version: str, code_dir: Path | None, env: dict[str, str], run: int, args: argparse.Namespace
) -> BurstResult:
    """One burst against ``code_dir``'s wxnotify, or (``None``) against the reference, which stores nothing."""
    reference = code_dir is None
    if not reference:
        run_internal("prepare", env, BASE_DIR, str(args.requests), str(run))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = start_burst_server(code_dir, port, env, args)
    workers = None
    if args.qcluster and not reference:
        workers = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=code_dir,
            env=env,
            process_group=0,
            stderr=subprocess.DEVNULL if args.quiet else None,
        )
    counted = {"statuses": {}, "receipts_kept_aside": 0, "settled_seconds": 0.0}
    cpu: dict[str, float] = {}
    metrics_dir = Path(env["PROMETHEUS_MULTIPROC_DIR"])
    receipts_before, inserts_before = receipt_inserts(metrics_dir)
    try:
        wait_until_up(base_url, server)
        prepared = prepare_receipts(base_url, args.requests, run)
        meter = burst_meter(server, workers, env.get("DATABASE_URL", ""))
        meter.start()
        holder = None
        if args.hold_lock and not env.get("DATABASE_URL"):
            holder = threading.Thread(
                target=hold_sqlite_write_lock, args=(Path(env["WXNOTIFY_VAR_DIR"]), args.hold_lock), daemon=True
            )
            holder.start()
        kinds, latencies, seconds = post_all(prepared, args.concurrency)
        if holder is not None:
            holder.join()
        first = tally(kinds)
        retried = 0
        for _round in range(BURST_RETRIES):
            again = [index for index, kind in enumerate(kinds) if kind != "success"]
            if not again:
                break
            retried += len(again)
            time.sleep(1)
            answers, _latencies, _seconds = post_all([prepared[index] for index in again], args.concurrency)
            for index, kind in zip(again, answers, strict=True):
                kinds[index] = kind
        if not reference:
            counted = run_internal("count", env, BASE_DIR, str(args.requests), str(args.settle))
        cpu = meter.stop()
    finally:
        server.terminate()
        server.wait(timeout=30)
        if workers is not None:
            os.killpg(workers.pid, signal.SIGTERM)
            try:
                workers.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(workers.pid, signal.SIGKILL)
                workers.wait()
    receipts_after, inserts_after = receipt_inserts(metrics_dir)
    inserts = inserts_after - inserts_before
    return BurstResult(
        receipts_per_insert=(receipts_after - receipts_before) / inserts if inserts else None,
        configuration=configuration,
        version=version,
        first_answers=first,
        retries=retried,
        final_answers=tally(kinds),
        seconds=seconds,
        p99_ms=percentile(latencies, 0.99),
        statuses=counted["statuses"],
        receipts_kept_aside=counted["receipts_kept_aside"],
        settled_seconds=counted["settled_seconds"],
        cpu=cpu,
        reference=reference,
    )


def burst_report(results: list[BurstResult], args: argparse.Namespace, command: str, loads: tuple[str, str]) -> str:
    def answers(counts: dict[str, int]) -> str:
        return ", ".join(f"{kind} {count}" for kind, count in sorted(counts.items(), key=lambda item: -item[1]))

    def rate(result: BurstResult) -> float:
        return args.requests / result.seconds

    references: dict[str, list[float]] = {}
    for result in results:
        if result.reference:
            references.setdefault(result.configuration, []).append(rate(result))
    lines = [
        f"{BURST_SECTION} — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}`",
        "",
        f"{args.requests} messages stored as just sent (status `sent`, each with its msgid), then {args.requests} "
        f"distinct AES `TEMPLATESENDJOBFINISH` receipts for them from {args.concurrency} client threads at once; "
        f"every request not answered `success` sent again unchanged up to {BURST_RETRIES} times (as WeChat retries). "
        f"gunicorn `gunicorn.conf.py` with {args.workers} workers x {args.threads} threads, DEBUG off"
        f"{', a qcluster beside it' if args.qcluster else ''}; the reference (`bench/reference_callback.py`: "
        "signature, decryption, parsing, `success`, nothing stored) under the same workers and threads; "
        f"{os.cpu_count()} CPUs shared with other work; Python {platform.python_version()}; load average "
        f"(1/5/15 min) {loads[0]} at start, {loads[1]} at end.",
        "",
        "| configuration | code | first answers | receipts/s (first pass) | × reference | p99 ms | resent "
        "| final answers | messages delivered | settled after (s) | answered success, not applied | kept aside "
        "| server CPU ms per receipt | receipts per INSERT |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|",
    ]
    for result in results:
        if result.reference:
            ratio, delivered, settled, lost, aside = "1", "—", "—", "—", "—"
        else:
            reference_rates = references.get(result.configuration)
            ratio = f"{rate(result) / statistics.mean(reference_rates):.2f}" if reference_rates else "—"
            delivered = f"{result.statuses.get('delivered', 0)} of {args.requests}"
            settled, lost, aside = f"{result.settled_seconds:.1f}", str(result.lost), str(result.receipts_kept_aside)
        per_insert = "—" if result.receipts_per_insert is None else f"{result.receipts_per_insert:.1f}"
        lines.append(
            f"| {result.configuration} | {result.version} | {answers(result.first_answers)} | {rate(result):.0f} | "
            f"{ratio} | {result.p99_ms:.0f} | {result.retries} | {answers(result.final_answers)} | {delivered} | "
            f"{settled} | {lost} | {aside} | {cpu_per_receipt(result.cpu, args.requests)} | {per_insert} |"
        )
    lines += [
        "",
        '"× reference" divides by the mean of the reference\'s rates in the same configuration\'s runs. "Settled '
        'after" is how long after the last answer the last message became `delivered` (receipts applied in batches '
        'after their answer). "Kept aside" counts receipts stored as pending or unmatched instead of applied (none '
        'expected: every message exists with its msgid before its receipt arrives). "Server CPU" is the CPU time '
        "(user + system, from /proc) of gunicorn's processes, the qcluster's and the PostgreSQL backends of the "
        "benchmark's database from the first request until the count, per receipt: the figure the machine's "
        'other load disturbs least (the client\'s own CPU is not in it). "Receipts per INSERT" is the mean batch '
        "of the web processes' group commit (`wxnotify_callback_receipts_per_insert`; — for code without it).",
    ]
    return "\n".join(lines) + "\n"


def cpu_per_receipt(cpu: dict[str, float], receipts: int) -> str:
    """``total = gunicorn + qcluster + postgres`` in ms per receipt."""
    server = {name: seconds for name, seconds in cpu.items() if name != "client"}
    if not server:
        return "—"
    parts = " + ".join(f"{name} {1000 * seconds / receipts:.2f}" for name, seconds in server.items())
    total = 1000 * sum(server.values()) / receipts
    return f"{total:.2f} ({parts})" if len(server) > 1 else f"{total:.2f}"


def burst_main(args: argparse.Namespace, command: str) -> int:
    loads_start = load_average()
    scratch = Path(tempfile.mkdtemp(prefix="wxnotify-bench-burst-"))
    results: list[BurstResult] = []
    try:
        versions: list[tuple[str, Path]] = []
        if args.baseline_rev:
            baseline_dir = scratch / "baseline"
            baseline_dir.mkdir()
            versions.append((f"{export_commit(args.baseline_rev, baseline_dir)} (before)", baseline_dir))
        versions.append((this_tree(), BASE_DIR))
        versions.append(("reference", None))
        configurations = [] if args.services_only else [("embedded default (SQLite, database cache)", "", "")]
        if args.postgres or args.redis:
            if not (args.postgres and args.redis):
                raise SystemExit("--postgres and --redis go together")
            configurations.append(("PostgreSQL + Redis", args.postgres, args.redis))
        run = 0
        for configuration, database_url, redis_url in configurations:
            env = server_environment()
            env.update(
                DATABASE_URL=database_url,
                REDIS_URL=redis_url,
                WXNOTIFY_VAR_DIR=str(scratch / f"var-{len(results)}"),
                PROMETHEUS_MULTIPROC_DIR=str(scratch / f"metrics-{len(results)}"),
            )
            Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir()
            if database_url:
                recreate_database(database_url)
                flush_redis(redis_url)
            subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity=0"], cwd=BASE_DIR, env=env, check=True)
            # Rounds alternate the order (before, after, after, before, ...) so a machine that gets busier or
            # quieter during the run does not favour one version.
            for round_index in range(args.rounds):
                for version, code_dir in versions if round_index % 2 == 0 else versions[::-1]:
                    run += 1
                    print(f"[{time.strftime('%X')}] {configuration}: {version}", flush=True)
                    result = burst_once(configuration, version, code_dir, env, run, args)
                    print(f"    {result}", flush=True)
                    results.append(result)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    text = burst_report(results, args, command, (loads_start, load_average()))
    print(text)
    if not args.no_results:
        write_results_section(BURST_SECTION, text)
    applied = all(r.reference or (r.lost == 0 and r.statuses.get("delivered", 0) == args.requests) for r in results)
    return 0 if applied else 1


def internal_main(command: str, args: list[str]) -> int:
    """A step run in a child process with one configuration's settings (see :func:`run_internal`)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wxnotify.settings")
    import django

    django.setup()
    if command == "prepare":
        result = internal_prepare(int(args[0]), int(args[1]))
    else:
        result = internal_count(int(args[0]), float(args[1]))
    print(json.dumps(result))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="callbacks per mode (default 2000)")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads (default 16)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument(
        "--threads",
        type=int,
        help="threads per gunicorn worker (default 1: sync; 8 for the receipt burst, as in production)",
    )
    parser.add_argument("--no-results", action="store_true", help="print only, do not write bench/RESULTS.md")
    parser.add_argument("--receipt-burst", action="store_true", help="the receipt burst instead (see the docstring)")
    parser.add_argument("--baseline-rev", help="receipt burst: also run the code of this commit, before this tree's")
    parser.add_argument("--postgres", help="receipt burst: also on this PostgreSQL database (name starts with bench)")
    parser.add_argument("--redis", help="receipt burst: with this Redis database (flushed)")
    parser.add_argument("--rounds", type=int, default=1, help="receipt burst: runs per configuration and version")
    parser.add_argument("--quiet", action="store_true", help="receipt burst: hide gunicorn's error log")
    parser.add_argument("--qcluster", action="store_true", help="receipt burst: a qcluster runs beside gunicorn")
    parser.add_argument(
        "--settle",
        type=float,
        default=10,
        help="receipt burst: stop waiting for the receipts to be applied after this long without a change (default 10)",
    )
    parser.add_argument(
        "--services-only", action="store_true", help="receipt burst: only PostgreSQL + Redis, not the embedded default"
    )
    parser.add_argument(
        "--hold-lock", type=float, default=0, help="receipt burst, SQLite: hold the write lock this long mid-burst"
    )
    parser.add_argument("--internal", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.internal:
        return internal_main(args.internal[0], args.internal[1:])
    command = command_line()
    if args.receipt_burst:
        args.threads = args.threads or 8
        return burst_main(args, command)
    args.threads = args.threads or 1

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
