"""Send pipeline benchmark: API accept latency, campaign delivery vs a raw client, token fetches, 100k acceptance.

Runs the real stack on this machine — PostgreSQL, Redis, the WeChat sandbox (50 ms per send), two ``qcluster``
processes and the API under gunicorn — and measures, in one run so the figures share the machine's noise:

1. API accept: ``POST /api/v1/messages/`` open-loop at a fixed rate (requests scheduled by the clock, latency
   counted from the scheduled instant, so a slow server cannot slow the client down and hide its own queueing),
   then a closed-loop maximum with N clients.
2. A 20,000-recipient campaign created through the API, from the request to the last message stored as sent,
   bracketed by a plain ``requests`` client (64 keep-alive threads) sending 20,000 to the same sandbox; every
   message must reach the sandbox exactly once.
3. Access-token fetches the whole run cost (per sandbox account).
4. Acceptance of 100,000 recipients: an openid list through the API (peak RSS of the gunicorn worker), and every
   subscribed follower through ``create_campaign`` in a fresh process (its ``ru_maxrss``).

The benchmark owns its database: it is dropped, recreated and migrated on every run, so its name must start
with ``bench``; the Redis database is flushed.  Followers are bulk-inserted into the database (the sandbox's
deterministic openids), not fetched with ``sync_followers``: a sync of 100,000 would only add minutes.
All traffic stays on 127.0.0.1.  A full run takes about four minutes and replaces its section of
``bench/RESULTS.md`` (other sections stay; ``--quick`` runs print only)::

    .venv/bin/python bench/pipeline.py            # PostgreSQL db bench_pipeline, Redis db 12
    .venv/bin/python bench/pipeline.py --quick --skip-100k
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import (
    BASE_DIR,
    Child,
    CpuMeter,
    Stack,
    command_line,
    fresh_services,
    load_average,
    memory_kib,
    port_is_open,
    stack_environment,
    unwind_on_sigterm,
    verdict,
    worker_pids,
    write_results_section,
)
from tests.servers import free_port

SECTION_TITLE = "## Send pipeline"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_pipeline"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
LATENCY_MS = 50
# API throttles far above the bench's rates.
API_THROTTLES_RAISED = {
    "WXNOTIFY_API_SEND_RATE": "100000/s",
    "WXNOTIFY_API_BURST_RATE": "100000/s",
    "WXNOTIFY_API_SUSTAINED_RATE": "100000000/h",
}
# A second sandbox account for the raw client, so its token fetch and sends never mix with the pipeline's.
RAW_APPID = "wxbe0c0000000000a1"
RAW_SECRET = "bench-raw-client-secret-sandbox-only"
TEMPLATE_DATA = {
    "character_string1": {"value": "SO20261128001"},
    "thing2": {"value": "机械键盘"},
    "time3": {"value": "2026年11月28日 10:30"},
    "amount4": {"value": "¥399.00"},
}
# gunicorn's shape; --gunicorn-workers/--gunicorn-threads compare others (threads=1: the sync worker).
GUNICORN_WORKERS = 2
GUNICORN_THREADS = 8
QCLUSTERS = 2
RAW_THREADS = 64
# The open loop's p99 is also reported per window of this many seconds.
P99_WINDOW_SECONDS = 5.0
UNFINISHED = ("queued", "sending")


@dataclass(frozen=True)
class Sizes:
    open_loop_rate: int
    # A second, lighter open-loop rate: the latency when the machine is not saturated.
    light_rate: int
    open_loop_seconds: float
    closed_loop_clients: int
    closed_loop_seconds: float
    campaign: int
    big_campaign: int


FULL = Sizes(200, 50, 20, 16, 10, 20_000, 100_000)
QUICK = Sizes(100, 25, 5, 8, 3, 2_000, 10_000)


@dataclass
class Latencies:
    """Request outcomes of one load phase."""

    seconds: float = 0.0
    ok_ms: list[float] = field(default_factory=list)
    # Open loop only: when each accepted request was scheduled, in seconds from the phase's start.
    ok_at: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def add_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    @property
    def count(self) -> int:
        return len(self.ok_ms) + sum(self.errors.values())

    @property
    def rate(self) -> float:
        return len(self.ok_ms) / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float, values: list[float] | None = None) -> float:
        ordered = sorted(self.ok_ms if values is None else values)
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))] if ordered else float("nan")

    def window_percentiles(self, fraction: float, window_seconds: float) -> list[float]:
        """The percentile of each consecutive window of the run: tells a tail spread over the whole run from one
        stall (the machine is shared, and one slow second decides a p99 of 20 s)."""
        windows: dict[int, list[float]] = {}
        for at, ms in zip(self.ok_at, self.ok_ms, strict=True):
            windows.setdefault(int(at // window_seconds), []).append(ms)
        return [self.percentile(fraction, windows[index]) for index in sorted(windows)]


# --- Fixtures: account, templates, followers, API user -----------------------------------------------------------


def register_account(demo: dict[str, Any]) -> Any:
    from django.core.management import call_command

    from accounts.models import OfficialAccount
    from templates_app.services import sync_templates

    call_command(
        "add_official_account",
        appid=demo["appid"],
        secret=demo["secret"],
        token=demo["token"],
        aes_key=demo["encoding_aes_key"],
        mode=demo["mode"],
        name="Benchmark (sandbox demo account)",
        verbosity=0,
    )
    account = OfficialAccount.objects.get(appid=demo["appid"])
    sync_templates(account)
    return account


def insert_followers(account: Any, count: int) -> None:
    from accounts.models import Follower
    from sandbox.state import seeded_openid

    batch = 5000
    for start in range(0, count, batch):
        Follower.objects.bulk_create(
            Follower(account=account, openid=seeded_openid(account.appid, index), subscribed=True)
            for index in range(start, min(count, start + batch))
        )


def api_token(account: Any) -> str:
    """The API key of a business-staff member operating ``account``: a service's usual identity, whose requests
    check group permissions and account access (a superuser's skip both)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    from accounts.selectors import STAFF_GROUP

    user = get_user_model().objects.create_user("bench", password=secrets.token_urlsafe(16))
    user.groups.add(Group.objects.get(name=STAFF_GROUP))
    account.operators.add(user)
    return Token.objects.create(user=user).key


def start_sandbox(stack: Stack, port: int, followers: int) -> Child:
    """The WeChat sandbox on ``port``, answering every send after ``LATENCY_MS``, without receipts."""
    sandbox = stack.manage(
        "sandbox",
        "wechat_sandbox",
        f"--port={port}",
        f"--followers={followers}",
        f"--latency-ms={LATENCY_MS}",
        "--no-receipts",
    )
    stack.wait_for("the sandbox", lambda: port_is_open(port))
    return sandbox


def start_service(
    stack: Stack,
    web: str,
    token: str,
    workers: int = GUNICORN_WORKERS,
    threads: int = GUNICORN_THREADS,
    project: Path | None = None,
) -> tuple[list[Child], Child, ThreadSessions]:
    """The production shape: ``QCLUSTERS`` qclusters and the API under gunicorn on ``web``'s port, waited for until
    the API answers; returns the qclusters, gunicorn and the API sessions of ``token``'s user.  ``project``: the
    code to run (an exported commit, for a before/after run), this tree by default."""
    manage = str((project or BASE_DIR) / "manage.py")
    qclusters = [stack.spawn(f"qcluster {n + 1}", [manage, "qcluster"]) for n in range(QCLUSTERS)]
    gunicorn = stack.spawn(
        "gunicorn",
        [
            "-m",
            "gunicorn",
            f"--chdir={project or BASE_DIR}",
            "wxnotify.wsgi:application",
            f"--workers={workers}",
            f"--threads={threads}",
            f"--bind={web.removeprefix('http://')}",
            "--log-level=warning",
        ],
    )
    sessions = ThreadSessions({"Authorization": f"Token {token}", "Content-Type": "application/json"})

    def api_up() -> bool:
        try:
            return sessions.get().get(f"{web}/api/v1/templates/", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    stack.wait_for("gunicorn", api_up)
    return qclusters, gunicorn, sessions


# --- Measurements -------------------------------------------------------------------------------------------------


class ThreadSessions:
    """One keep-alive session per thread, as a client's connection pool would have."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.local = threading.local()
        self.headers = headers

    def get(self) -> requests.Session:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
            session.headers.update(self.headers)
        return session


def message_body(appid: str, template_id: str, openid: str, client_msg_id: str) -> dict[str, Any]:
    return {
        "account": appid,
        "touser": openid,
        "template_id": template_id,
        "data": TEMPLATE_DATA,
        "client_msg_id": client_msg_id,
    }


def open_loop(url: str, sessions: ThreadSessions, bodies: list[bytes], rate: float) -> Latencies:
    """Send request i at start + i/rate whatever earlier requests are doing; latency from that scheduled instant."""
    result = Latencies()
    lock = threading.Lock()

    def send(body: bytes, scheduled: float) -> None:
        try:
            response = sessions.get().post(url, data=body, timeout=30)
            kind = None if response.status_code == 202 else f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            kind = type(exc).__name__
        elapsed = (time.perf_counter() - scheduled) * 1000
        with lock:
            if kind is None:
                result.ok_ms.append(elapsed)
                result.ok_at.append(scheduled - start)
            else:
                result.add_error(kind)

    # Enough threads that a reply slower than a second still finds a free thread for the next request.
    with ThreadPoolExecutor(max_workers=max(64, int(rate))) as pool:
        start = time.perf_counter() + 0.05
        for index, body in enumerate(bodies):
            scheduled = start + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(send, body, scheduled)
    result.seconds = time.perf_counter() - start
    return result


def closed_loop(url: str, sessions: ThreadSessions, make_body: Any, clients: int, seconds: float) -> Latencies:
    """``clients`` threads each sending the next request as soon as the previous one is answered."""
    result = Latencies()
    lock = threading.Lock()
    counter = itertools.count()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        session = sessions.get()
        ok, errors = [], []
        while time.perf_counter() < deadline:
            body = make_body(next(counter))
            began = time.perf_counter()
            try:
                response = session.post(url, data=body, timeout=30)
                if response.status_code == 202:
                    ok.append((time.perf_counter() - began) * 1000)
                else:
                    errors.append(f"HTTP {response.status_code}")
            except requests.RequestException as exc:
                errors.append(type(exc).__name__)
        with lock:
            result.ok_ms.extend(ok)
            for kind in errors:
                result.add_error(kind)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class RawRun:
    count: int
    seconds: float
    errcodes: dict[int, int]

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def raw_baseline(sandbox: str, template_id: str, count: int, run: str) -> RawRun:
    """The fastest plain client: 64 threads, keep-alive sessions, one send after another, each with a client_msg_id."""
    return raw_sends(
        sandbox,
        "/cgi-bin/message/template/send",
        lambda openid, index: {
            "touser": openid,
            "template_id": template_id,
            "data": TEMPLATE_DATA,
            "client_msg_id": f"raw-{run}-{index}",
        },
        count,
    )


def raw_sends(sandbox: str, path: str, payload: Callable[[str, int], dict[str, Any]], count: int) -> RawRun:
    """``count`` sends to ``path`` from 64 threads with keep-alive sessions, as the raw client's account
    (``RAW_APPID``), to its seeded openids in order; ``payload(openid, index)`` is each request's body."""
    from sandbox.state import seeded_openid

    token = requests.post(
        f"{sandbox}/cgi-bin/stable_token",
        json={"grant_type": "client_credential", "appid": RAW_APPID, "secret": RAW_SECRET},
        timeout=10,
    ).json()["access_token"]
    url = f"{sandbox}{path}?access_token={token}"
    openids = [seeded_openid(RAW_APPID, index) for index in range(count)]
    errcodes: dict[int, int] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(RAW_THREADS + 1)

    def worker(offset: int) -> None:
        seen: dict[int, int] = {}
        with requests.Session() as session:
            session.headers["Content-Type"] = "application/json"
            barrier.wait()
            for index in range(offset, count, RAW_THREADS):
                body = json.dumps(payload(openids[index], index), ensure_ascii=False).encode()
                errcode = session.post(url, data=body, timeout=30).json().get("errcode", -1)
                seen[errcode] = seen.get(errcode, 0) + 1
        with lock:
            for errcode, number in seen.items():
                errcodes[errcode] = errcodes.get(errcode, 0) + number

    threads = [threading.Thread(target=worker, args=(offset,)) for offset in range(RAW_THREADS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return RawRun(count, time.perf_counter() - started, errcodes)


def sandbox_account(sandbox: str, appid: str) -> dict[str, Any]:
    return requests.get(f"{sandbox}/sandbox/state", timeout=10).json()["accounts"][appid]


def sandbox_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the sandbox counted for an account between two snapshots: sends, delivered, duplicates, errors."""
    return {
        "sandbox": {name: after[name] - before[name] for name in ("sends", "delivered", "duplicates")},
        "sandbox_errors": {
            code: number - before["errors"].get(code, 0)
            for code, number in after["errors"].items()
            if number != before["errors"].get(code, 0)
        },
    }


def unfinished_messages(**filters: Any) -> int:
    from messaging.models import Message

    return Message.objects.filter(status__in=UNFINISHED, **filters).count()


def wait_drained(stack: Stack, timeout: float, **filters: Any) -> float:
    """Block until no message matching ``filters`` is queued or sending; return when that was seen."""
    deadline = time.monotonic() + timeout
    while unfinished_messages(**filters):
        stack.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{unfinished_messages(**filters)} message(s) still unfinished after {timeout:.0f} s")
        time.sleep(0.1)
    return time.time()


def run_api_campaign(
    stack: Stack,
    sessions: ThreadSessions,
    web: str,
    body: dict[str, Any],
    meter: CpuMeter,
    wait_seconds: float = 900,
) -> dict[str, Any]:
    """Accept ``body`` through the API and wait until none of its messages is queued or sending: the acceptance's
    and the delivery's seconds, the messages by status and the CPU ``meter`` measured meanwhile."""
    meter.start()
    accepted_at = time.time()
    response = sessions.get().post(f"{web}/api/v1/campaigns/", data=json.dumps(body), timeout=120)
    accept_seconds = time.time() - accepted_at
    if response.status_code != 202:
        raise RuntimeError(f"campaign refused: HTTP {response.status_code} {response.text[:300]}")
    campaign_id = response.json()["id"]
    wait_drained(stack, wait_seconds, campaign_id=campaign_id)
    cpu = meter.stop()
    return {
        "accept_seconds": accept_seconds,
        "seconds": last_sent_at(campaign_id=campaign_id) - accepted_at,
        "statuses": status_counts(campaign_id=campaign_id),
        "cpu": cpu,
    }


def status_counts(**filters: Any) -> dict[str, int]:
    from django.db.models import Count

    from messaging.models import Message

    return dict(Message.objects.filter(**filters).values_list("status").annotate(n=Count("id")).order_by())


def last_sent_at(**filters: Any) -> float:
    from django.db.models import Max

    from messaging.models import Message

    return Message.objects.filter(**filters).aggregate(last=Max("sent_at"))["last"].timestamp()


def accept_all_subscribed(appid: str, template_id: str) -> None:
    """Child-process mode: accept a campaign to every subscribed follower through the service; print JSON.

    A fresh process, so ``ru_maxrss`` is this acceptance's peak and not the benchmark's own lists.
    """
    import django

    django.setup()
    from accounts.models import OfficialAccount
    from messaging.services import RecipientSpec, create_campaign

    account = OfficialAccount.objects.get(appid=appid)
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    campaign = create_campaign(
        account=account,
        template_id=template_id,
        data=TEMPLATE_DATA,
        recipients=RecipientSpec.all_subscribed(),
        name="bench all subscribed",
    )
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "recipients": campaign.recipient_count,
                "baseline_kib": baseline_kib,
                "peak_kib": peak_kib,
            }
        )
    )


# --- The run ------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, sizes: Sizes) -> dict[str, Any]:
    from sandbox.demo import DEMO_ACCOUNT, DEMO_APPID

    figures: dict[str, Any] = {
        "load_start": load_average(),
        "started": datetime.now(UTC),
        "gunicorn": (args.gunicorn_workers, args.gunicorn_threads),
    }
    database_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    if not database_url.startswith("postgres") or not redis_url.startswith("redis"):
        raise SystemExit("this benchmark runs on PostgreSQL and Redis: DATABASE_URL and REDIS_URL must point there")
    sandbox_port, web_port = free_port(), free_port()
    sandbox = f"http://127.0.0.1:{sandbox_port}"
    web = f"http://127.0.0.1:{web_port}"
    metrics_dir = tempfile.mkdtemp(prefix="wxnotify-bench-metrics-")
    env = stack_environment(database_url, redis_url, sandbox_port, metrics_dir, **API_THROTTLES_RAISED)
    figures.update(database=fresh_services(database_url, redis_url, env), redis=redis_url)

    followers = sizes.big_campaign
    stack = Stack(env)
    try:
        sandbox_child = start_sandbox(stack, sandbox_port, followers)
        requests.post(
            f"{sandbox}/sandbox/accounts",
            json={"appid": RAW_APPID, "secret": RAW_SECRET, "followers": sizes.campaign},
            timeout=30,
        ).raise_for_status()
        account = register_account(DEMO_ACCOUNT)
        template_id = account.templates.filter(is_active=True).order_by("pk").values_list("template_id", flat=True)
        template_id = next(tid for tid in template_id if tid.startswith("sandbox-order-shipped"))
        print(f"[{time.strftime('%X')}] inserting {followers} followers", flush=True)
        insert_followers(account, followers)
        token = api_token(account)

        qclusters, gunicorn, sessions = start_service(stack, web, token, args.gunicorn_workers, args.gunicorn_threads)
        gunicorn_group = gunicorn.pid
        qcluster_groups = {child.pid for child in qclusters}
        meter = CpuMeter(
            {
                "qclusters": lambda pid, sample: sample.pgid in qcluster_groups,
                "gunicorn": lambda pid, sample: sample.pgid == gunicorn_group,
                "sandbox": lambda pid, sample: sample.pgid == sandbox_child.pid,
                "postgres": lambda pid, sample: sample.name == "postgres",
                "redis": lambda pid, sample: sample.name == "redis-server",
                "bench client": lambda pid, sample: pid == os.getpid(),
            }
        )
        run_id = secrets.token_hex(3)
        from sandbox.state import seeded_openid

        openids = [seeded_openid(DEMO_APPID, index) for index in range(followers)]
        messages_url = f"{web}/api/v1/messages/"

        def single(index: int) -> bytes:
            openid = openids[index % len(openids)]
            return json.dumps(message_body(DEMO_APPID, template_id, openid, f"b-{run_id}-{index}")).encode()

        singles_before = sandbox_account(sandbox, DEMO_APPID)
        # Warm-up: connections, lazy imports, the first token fetch in the workers.
        closed_loop(messages_url, sessions, lambda i: single(10_000_000 + i), 8, 1.0)
        wait_drained(stack, 60)

        # 1. API accept, open loop, then closed loop; delivery of what they accept runs meanwhile.
        sent = 0
        for name, rate in (("open_loop", sizes.open_loop_rate), ("light_loop", sizes.light_rate)):
            count = int(rate * sizes.open_loop_seconds)
            print(f"[{time.strftime('%X')}] open loop: {count} sends at {rate}/s", flush=True)
            bodies = [single(index) for index in range(sent, sent + count)]
            sent += count
            meter.start()
            figures[name] = open_loop(messages_url, sessions, bodies, rate)
            wait_drained(stack, 300)
            figures[f"{name}_cpu"] = meter.stop()
        print(f"[{time.strftime('%X')}] closed loop: {sizes.closed_loop_clients} clients", flush=True)
        meter.start()
        figures["closed_loop"] = closed_loop(
            messages_url, sessions, lambda i: single(sent + i), sizes.closed_loop_clients, sizes.closed_loop_seconds
        )
        wait_drained(stack, 300)
        figures["closed_loop_cpu"] = meter.stop()
        figures["singles"] = status_counts(campaign__isnull=True)
        figures["singles_sandbox"] = sandbox_delta(singles_before, sandbox_account(sandbox, DEMO_APPID))

        # 2. Raw client, pipeline campaign, raw client again.
        print(f"[{time.strftime('%X')}] raw client: {sizes.campaign} sends", flush=True)
        meter.start()
        figures["raw_before"] = raw_baseline(sandbox, template_id, sizes.campaign, f"{run_id}a")
        figures["raw_cpu"] = meter.stop()
        campaign_before = sandbox_account(sandbox, DEMO_APPID)
        print(f"[{time.strftime('%X')}] campaign of {sizes.campaign} through the API", flush=True)
        body = {
            "account": DEMO_APPID,
            "template_id": template_id,
            "data": TEMPLATE_DATA,
            "recipients": {"openids": openids[: sizes.campaign]},
            "name": "bench end-to-end",
        }
        e2e = run_api_campaign(stack, sessions, web, body, meter, wait_seconds=600)
        figures["e2e_cpu"] = e2e.pop("cpu")
        figures["e2e"] = {**e2e, **sandbox_delta(campaign_before, sandbox_account(sandbox, DEMO_APPID))}
        print(f"[{time.strftime('%X')}] raw client again", flush=True)
        figures["raw_after"] = raw_baseline(sandbox, template_id, sizes.campaign, f"{run_id}b")

        # 3. Token fetches over the whole run so far (every process: bench, 2 qclusters, gunicorn).
        figures["tokens"] = {
            appid: sandbox_account(sandbox, appid)["token_fetches"] for appid in (DEMO_APPID, RAW_APPID)
        }
        figures["tokens_elapsed"] = (datetime.now(UTC) - figures["started"]).total_seconds()
        figures["token_ttl"] = requests.get(f"{sandbox}/sandbox/state", timeout=10).json()["faults"]["token_ttl"]

        # With the workers stopped, nothing else shares the CPU: the API's accept capacity on its own, then
        # 4. the 100k acceptances.  What is accepted from here on stays queued; the database is dropped next run.
        for child in qclusters:
            stack.stop(child)
        print(f"[{time.strftime('%X')}] closed loop, workers stopped", flush=True)
        meter.start()
        figures["accept_only"] = closed_loop(
            messages_url,
            sessions,
            lambda i: single(20_000_000 + i),
            sizes.closed_loop_clients,
            sizes.closed_loop_seconds,
        )
        figures["accept_only_cpu"] = meter.stop()
        if not args.skip_100k:
            figures["big_api"] = accept_big_list(stack, web, sessions, gunicorn.pid, template_id, openids)
            figures["big_service"] = accept_big_service(env, template_id, DEMO_APPID)
        figures["load_end"] = load_average()
        figures["cpus"] = os.cpu_count()
        return figures
    finally:
        stack.stop_all()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def accept_big_list(
    stack: Stack, web: str, sessions: ThreadSessions, master_pid: int, template_id: str, openids: list[str]
) -> dict[str, Any]:
    from sandbox.demo import DEMO_APPID

    print(f"[{time.strftime('%X')}] {len(openids)} openids through the API", flush=True)
    body = json.dumps(
        {
            "account": DEMO_APPID,
            "template_id": template_id,
            "data": TEMPLATE_DATA,
            "recipients": {"openids": openids},
            "name": "bench 100k list",
        }
    ).encode()
    workers = worker_pids(master_pid)
    before = {pid: memory_kib(pid) for pid in workers}
    started = time.perf_counter()
    response = sessions.get().post(f"{web}/api/v1/campaigns/", data=body, timeout=300)
    seconds = time.perf_counter() - started
    after = {pid: memory_kib(pid) for pid in workers}
    if response.status_code != 202:
        raise RuntimeError(f"100k campaign refused: HTTP {response.status_code} {response.text[:300]}")
    # The worker that served it is the one whose resident set grew most.
    served = max(workers, key=lambda pid: after[pid].get("VmHWM", 0) - before[pid].get("VmHWM", 0))
    return {
        "seconds": seconds,
        "body_mb": len(body) / 1e6,
        "recipients": response.json()["recipient_count"],
        "hwm_before_mb": before[served]["VmHWM"] / 1024,
        "hwm_after_mb": after[served]["VmHWM"] / 1024,
    }


def accept_big_service(env: dict[str, str], template_id: str, appid: str) -> dict[str, Any]:
    print(f"[{time.strftime('%X')}] all subscribed followers through the service", flush=True)
    output = subprocess.run(
        [sys.executable, __file__, "--accept-all-subscribed", appid, template_id],
        env=env,
        cwd=BASE_DIR,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


# --- Report -------------------------------------------------------------------------------------------------------


def gunicorn_shape(shape: tuple[int, int]) -> str:
    workers, threads = shape
    if threads == 1:
        return f"{workers} sync workers"
    return f"{workers} workers x {threads} threads (gthread)"


def report(figures: dict[str, Any], sizes: Sizes, command: str) -> str:
    open_loop_result: Latencies = figures["open_loop"]
    closed: Latencies = figures["closed_loop"]
    e2e = figures["e2e"]
    raws: list[RawRun] = [figures["raw_before"], figures["raw_after"]]
    raw_rate = statistics.mean(raw.rate for raw in raws)
    e2e_rate = sizes.campaign / e2e["seconds"]
    ratio = e2e_rate / raw_rate
    from sandbox.demo import DEMO_APPID

    fetches = sum(figures["tokens"][DEMO_APPID].values())
    exact = (
        e2e["statuses"] == {"sent": sizes.campaign}
        and e2e["sandbox"].get("delivered") == sizes.campaign
        and e2e["sandbox"].get("sends") == sizes.campaign
        and not e2e["sandbox_errors"]
    )
    raw_ok = all(raw.errcodes == {0: sizes.campaign} for raw in raws)
    p99 = open_loop_result.percentile(0.99)
    rows = [
        (
            f"API accept, open loop {sizes.open_loop_rate}/s x {sizes.open_loop_seconds:.0f} s: p99",
            f"{p99:.1f} ms",
            "≤ 50 ms",
            verdict(p99 <= 50 and not open_loop_result.errors),
        ),
        (
            "End-to-end / raw client rate",
            f"{e2e_rate:.0f}/s / {raw_rate:.0f}/s = {ratio:.2f}",
            "≥ 0.5",
            verdict(ratio >= 0.5),
        ),
        (
            "Every campaign message sent exactly once",
            f"DB {e2e['statuses']}; sandbox sends {e2e['sandbox'].get('sends')}, "
            f"delivered {e2e['sandbox'].get('delivered')}, errors {e2e['sandbox_errors'] or 'none'}",
            f"{sizes.campaign} sent, no failure",
            verdict(exact),
        ),
        (
            "Token fetches (pipeline account, all processes)",
            f"{fetches} in {figures['tokens_elapsed']:.0f} s",
            f"1 per lifetime ({figures['token_ttl']} s)",
            verdict(fetches == 1),
        ),
    ]
    if "big_api" in figures:
        big_api, big_service = figures["big_api"], figures["big_service"]
        rows += [
            (
                f"{big_api['recipients']:,} openids via API ({big_api['body_mb']:.1f} MB body): wall time",
                f"{big_api['seconds']:.2f} s",
                "≤ 10 s",
                verdict(big_api["seconds"] <= 10),
            ),
            (
                "… peak RSS of the gunicorn worker that served it (VmHWM)",
                f"{big_api['hwm_after_mb']:.0f} MB (before: {big_api['hwm_before_mb']:.0f} MB)",
                "< 300 MB",
                verdict(big_api["hwm_after_mb"] < 300),
            ),
            (
                f"{big_service['recipients']:,} all subscribed via create_campaign: wall time",
                f"{big_service['seconds']:.2f} s",
                "≤ 10 s",
                verdict(big_service["seconds"] <= 10),
            ),
            (
                "… peak RSS of that process (ru_maxrss)",
                f"{big_service['peak_kib'] / 1024:.0f} MB "
                f"(after django.setup: {big_service['baseline_kib'] / 1024:.0f} MB)",
                "< 300 MB",
                verdict(big_service["peak_kib"] / 1024 < 300),
            ),
        ]

    def latency_line(name: str, result: Latencies) -> str:
        return (
            f"| {name} | {result.count} | {result.rate:.0f} | {result.percentile(0.5):.1f} | "
            f"{result.percentile(0.9):.1f} | {result.percentile(0.99):.1f} | "
            f"{max(result.ok_ms, default=float('nan')):.1f} | {sum(result.errors.values())} |"
        )

    def cpu_line(name: str, used: dict[str, float], messages: int) -> str:
        cells = " | ".join(f"{used[part] * 1000 / messages:.2f}" for part in used)
        return f"| {name} | {cells} | {sum(used.values()) * 1000 / messages:.2f} |"

    cpu_parts = list(figures["e2e_cpu"])
    lines = [
        f"{SECTION_TITLE} — {figures['started']:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {figures['cpus']} CPUs, Python {platform.python_version()}, shared with other work; "
        f"load average (1/5/15 min) {figures['load_start']} at start, {figures['load_end']} at end.",
        f"Stack: PostgreSQL (database `{figures['database']}`, dropped and recreated), Redis `{figures['redis']}` "
        f"(cache, token lock, django-q2 broker; flushed); {QCLUSTERS} `qcluster` processes with the default "
        "settings (2 workers each, 32 sends in flight per process, batches of 200); API under gunicorn "
        f"{gunicorn_shape(figures['gunicorn'])}, DEBUG off, throttles raised, called with the token of a "
        "business-staff operator of the account; "
        f"WeChat sandbox (own process) answering every send after {LATENCY_MS} ms, no receipts. "
        f"{sizes.big_campaign:,} followers bulk-inserted into the database (the sandbox's seeded openids).",
        "",
        "| figure | measured | target | |",
        "|---|---|---|---|",
        *(f"| {name} | {value} | {target} | {result} |" for name, value, target, result in rows),
        "",
        "API accept (`POST /api/v1/messages/`, one message each, delivery running meanwhile; open-loop latency is "
        "counted from the scheduled send instant):",
        "",
        "| load | requests | accepted/s | p50 ms | p90 ms | p99 ms | max ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        latency_line(f"open loop, {sizes.open_loop_rate}/s scheduled", open_loop_result),
        latency_line(f"open loop, {sizes.light_rate}/s scheduled", figures["light_loop"]),
        latency_line(f"closed loop, {sizes.closed_loop_clients} clients", closed),
        latency_line(f"closed loop, {sizes.closed_loop_clients} clients, qclusters stopped", figures["accept_only"]),
        "",
        f"p99 of each {P99_WINDOW_SECONDS:.0f} s of the {sizes.open_loop_rate}/s open loop, in ms: "
        + ", ".join(f"{value:.1f}" for value in open_loop_result.window_percentiles(0.99, P99_WINDOW_SECONDS))
        + ".",
        "",
        f"Single messages accepted above, once delivery drained: statuses in the database {figures['singles']}; "
        f"the sandbox counted {figures['singles_sandbox']['sandbox']}, errors "
        f"{figures['singles_sandbox']['sandbox_errors'] or 'none'}.",
        "",
        f"Delivery of {sizes.campaign:,} messages ({LATENCY_MS} ms per send):",
        "",
        "| sender | seconds | messages/s | errors |",
        "|---|---:|---:|---:|",
        f"| raw client, {RAW_THREADS} threads (before) | {raws[0].seconds:.1f} | {raws[0].rate:.0f} | "
        f"{sizes.campaign - raws[0].errcodes.get(0, 0)} |",
        f"| pipeline: campaign via API → last message sent | {e2e['seconds']:.1f} | {e2e_rate:.0f} | "
        f"{sizes.campaign - e2e['statuses'].get('sent', 0)} |",
        f"| raw client, {RAW_THREADS} threads (after) | {raws[1].seconds:.1f} | {raws[1].rate:.0f} | "
        f"{sizes.campaign - raws[1].errcodes.get(0, 0)} |",
        "",
        f"The API accepted the campaign in {e2e['accept_seconds']:.2f} s. Raw client errcodes: "
        f"{', '.join(str(raw.errcodes) for raw in raws)}{'' if raw_ok else ' (not all 0)'}.",
        "",
        "CPU milliseconds per message, by process (from /proc; postgres and redis counted host-wide):",
        "",
        f"| run | {' | '.join(cpu_parts)} | total |",
        f"|---|{'---:|' * (len(cpu_parts) + 1)}",
        cpu_line(
            f"single sends, open loop {sizes.open_loop_rate}/s (accept + deliver)",
            figures["open_loop_cpu"],
            open_loop_result.count,
        ),
        cpu_line(
            f"single sends, open loop {sizes.light_rate}/s (accept + deliver)",
            figures["light_loop_cpu"],
            figures["light_loop"].count,
        ),
        cpu_line("single sends, closed loop (accept + deliver)", figures["closed_loop_cpu"], closed.count),
        cpu_line(
            "single sends, closed loop, qclusters stopped (accept only)",
            figures["accept_only_cpu"],
            figures["accept_only"].count,
        ),
        cpu_line("raw client (before)", figures["raw_cpu"], sizes.campaign),
        cpu_line("pipeline campaign", figures["e2e_cpu"], sizes.campaign),
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small numbers for a smoke run (prints, writes nothing)")
    parser.add_argument("--skip-100k", action="store_true", help="leave out the 100,000-recipient acceptance")
    parser.add_argument("--no-results", action="store_true", help="print only, do not write bench/RESULTS.md")
    parser.add_argument("--gunicorn-workers", type=int, default=GUNICORN_WORKERS, help="gunicorn worker processes")
    parser.add_argument(
        "--gunicorn-threads", type=int, default=GUNICORN_THREADS, help="threads per worker (1: the sync worker)"
    )
    parser.add_argument("--accept-all-subscribed", nargs=2, metavar=("APPID", "TEMPLATE_ID"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.accept_all_subscribed:
        accept_all_subscribed(*args.accept_all_subscribed)
        return 0
    command = command_line()
    sizes = QUICK if args.quick else FULL
    unwind_on_sigterm()
    figures = run(args, sizes)
    text = report(figures, sizes, command)
    print(text)
    if not (args.quick or args.no_results):
        write_results_section(SECTION_TITLE, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
