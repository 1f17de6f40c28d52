"""Chaos run: the real stack under every fault at once, and whether every accepted message kept its promise.

wxnotify promises that every accepted message ends ``sent``/``delivered`` or ``failed`` with a reason, and that no
recipient gets one twice.  This run throws everything at that promise together (issue 9):

- **Load**: a campaign to ``--recipients`` followers (bulk-inserted, as bench/pipeline.py does) and an open-loop
  stream of single sends through the REST API at ``--single-rate`` for ``--seconds``.  Each single carries its own
  ``client_msg_id``; a request answered 5xx (or 429) or lost to a connection error is retried by the client with
  the same body and ``client_msg_id``, as a real integration would, until it is answered (or 120 s pass).
- **Faults** during the load, at fixed fractions of it (see FAULT_PLAN): a ``qcluster`` killed with -9 (its whole
  process group) and restarted ``--restart-delay`` s later, twice (the first one, then the other); Redis stopped and
  started again empty (no persistence: the broker's queue and the cache are lost); PostgreSQL stopped (``-m fast``)
  and started again; the account's access tokens revoked at the sandbox twice.  Throughout, the sandbox fails
  ``--error-rate`` of sends with ``-1`` and drops ``--drop-reply-rate`` of the replies of sends it delivered
  (``--drop-mode``: ``close`` closes the connection at once; ``hang`` answers nothing until the client's read
  timeout, 10 s, which holds the whole delivery batch that long; ``mixed`` does either); its
  ``client_msg_id`` de-duplication window is ``--dedupe-window`` s (WeChat's is about 600 s) and the service's
  resend window (``WXNOTIFY_RESEND_WINDOW_SECONDS``) ``--resend-window`` s, so a blind resend is caught in minutes.
- **Stack**: a PostgreSQL cluster and a redis-server of the run's own (under a temporary directory, on free ports:
  the machine's shared servers are never touched), two ``manage.py qcluster`` (Redis broker), gunicorn with the
  repository's gunicorn.conf.py, and the sandbox (``manage.py wechat_sandbox``, ``--latency-ms`` per send) pushing
  delivery receipts to gunicorn's callback URL (``--no-receipts`` turns them off).  A process that exits by itself
  is restarted at once, as a process supervisor would, and the run says so.

After the load it waits up to ``--drain-timeout`` s for nothing to be ``queued`` or ``sending``, then reports: what
the API accepted; how each message ended (by status, errcode and the start of errmsg); what is still pending; every
delivery at the sandbox per ``client_msg_id`` (a second delivery, after the de-duplication window, is a duplicate
the recipient sees; de-duplicated resends are counted apart); retry lateness from the service's ``/metrics``
histogram ``wxnotify_retry_lateness_seconds`` (and, whatever the service exports, the gaps between a ``-1`` answer
and the next attempt as the sandbox saw them); how long the messages a killed worker held took to be sent again;
the time to drain after the last fault; token fetches; CPU by process.  Targets: 0 lost, 0 duplicate deliveries,
0 stuck, retry lateness p99 ≤ 5 s, a dead worker's messages re-sent within 60 s.

Run as root (PostgreSQL's binaries run as ``postgres`` via runuser).  The full run takes 8-13 minutes and replaces
its section of ``bench/RESULTS.md``, ``## Chaos run: <label>`` (other sections stay)::

    .venv/bin/python bench/chaos.py --label before
    .venv/bin/python bench/chaos.py --recipients 2000 --single-rate 10 --seconds 60 --no-results   # a few minutes
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import random
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
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
    ThrowawayPostgres,
    load_average,
    port_is_open,
    redis_server_argv,
    setup_django,
    stack_environment,
    write_results_section,
)
from bench.pipeline import (
    API_THROTTLES_RAISED,
    TEMPLATE_DATA,
    ThreadSessions,
    api_token,
    insert_followers,
    message_body,
    register_account,
)
from tests.servers import free_port

SECTION_TITLE = "## Chaos run"
DATABASE = "bench_chaos"
QCLUSTERS = 2
UNFINISHED = ("queued", "sending")
DELIVERIES = ("delivered", "redelivered")
# The faults, at these fractions of the load phase: (when, what, which qcluster).
FAULT_PLAN: tuple[tuple[float, str, int | None], ...] = (
    (0.06, "kill_qcluster", 0),
    (0.17, "invalidate_tokens", None),
    (0.29, "restart_redis", None),
    (0.42, "kill_qcluster", 1),
    (0.58, "restart_postgres", None),
    (0.75, "invalidate_tokens", None),
)
# A kill waits at most this long for a worker to hold messages, so the snapshot is never empty by bad timing.
KILL_WAIT_FOR_SENDING_SECONDS = 10.0
# A message still in the claim it had at the kill this long afterwards was the dead worker's (a live worker's
# batch ends within WeChat's read timeout).
HELD_AFTER_KILL_SECONDS = 15.0
RESEND_TARGET_SECONDS = 60.0
LATENESS_TARGET_SECONDS = 5.0
LATENESS_METRIC = "wxnotify_retry_lateness_seconds"
# The single-send client: request timeouts, its retry backoff and when it gives a request up.
CLIENT_TIMEOUT = (3.05, 10.0)
CLIENT_RETRY_CAP_SECONDS = 5.0
CLIENT_GIVE_UP_SECONDS = 120.0
CLIENT_THREADS = 256
PROGRESS_EVERY_SECONDS = 15.0
DROP_MODES = {
    "close": "the connection closed without an answer",
    "hang": "no answer until the client's read timeout",
    "mixed": "closed, or no answer until the client's read timeout",
}
# WeChat appends a request id to every errmsg ("… rid: 6560a1b2-0c3d4e5f"): not part of the reason.
RID_RE = re.compile(r"\s*rid:\s*[0-9a-fA-F]+-[0-9a-fA-F]+")
REASON_CHARS = 70


def log(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def with_database(action: Callable[[], Any], timeout: float = 120.0) -> Any:
    """Run an ORM call from the benchmark, reconnecting across a PostgreSQL restart (until ``timeout``)."""
    from django import db

    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except db.Error:
            db.connection.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# --- The single-send client ---------------------------------------------------------------------------------------


@dataclass
class SingleRequest:
    """One single send as its client saw it, over all its tries."""

    index: int
    client_msg_id: str
    body: bytes
    scheduled: float
    tries: int = 0
    status: int | None = None
    accepted_at: float | None = None
    outcome: str = "not sent"
    errors: Counter[str] = field(default_factory=Counter)


class SingleStream:
    """Open loop: request i is sent at start + i/rate whatever the earlier ones are doing, to ``urls[i % len(urls)]``
    (several web hosts take turns); each is retried with the same body (and so the same client_msg_id) after a 5xx,
    a 429 or a connection error, until it is answered."""

    def __init__(
        self,
        urls: list[str],
        sessions: ThreadSessions,
        bodies: list[tuple[str, bytes]],
        rate: float,
        abort: threading.Event,
    ) -> None:
        self.urls = urls
        self.sessions = sessions
        self.rate = rate
        self.abort = abort
        self.requests = [SingleRequest(i, cmid, body, 0.0) for i, (cmid, body) in enumerate(bodies)]
        self.thread = threading.Thread(target=self._run, name="single-stream", daemon=True)
        self.finished_at: float | None = None

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.thread.join()

    def accepted(self) -> int:
        return sum(1 for request in self.requests if request.status is not None)

    def _run(self) -> None:
        with ThreadPoolExecutor(max_workers=CLIENT_THREADS, thread_name_prefix="single") as pool:
            start = time.time() + 0.05
            for request in self.requests:
                if self.abort.is_set():
                    break
                request.scheduled = start + request.index / self.rate
                delay = request.scheduled - time.time()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(self._send, request)
        self.finished_at = time.time()

    def _send(self, request: SingleRequest) -> None:
        session = self.sessions.get()
        backoff = 0.25
        while not self.abort.is_set():
            request.tries += 1
            retry_after = None
            try:
                url = self.urls[request.index % len(self.urls)]
                response = session.post(url, data=request.body, timeout=CLIENT_TIMEOUT)
            except requests.RequestException as exc:
                kind = type(exc).__name__
            else:
                if response.status_code in (200, 202):
                    request.status, request.accepted_at, request.outcome = response.status_code, time.time(), "accepted"
                    return
                kind = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code != 429:
                    request.outcome = f"refused: HTTP {response.status_code} {response.text[:120]}"
                    request.errors[kind] += 1
                    return
                retry_after = response.headers.get("Retry-After")
            request.errors[kind] += 1
            if time.time() - request.scheduled > CLIENT_GIVE_UP_SECONDS:
                request.outcome = "given up"
                return
            try:
                wait = float(retry_after) if retry_after else backoff
            except ValueError:
                wait = backoff
            time.sleep(min(CLIENT_RETRY_CAP_SECONDS, wait) * random.uniform(0.8, 1.2))
            backoff = min(CLIENT_RETRY_CAP_SECONDS, backoff * 2)
        request.outcome = "aborted"


# --- Processes: started, killed, restarted --------------------------------------------------------------------------


@dataclass
class Event:
    """Something done to the stack (or that happened to it) during the run; ``ended`` when it took a while."""

    at: float
    what: str
    detail: str = ""
    ended: float | None = None


class Services:
    """The stack's long-running children by name, restarted when one exits by itself (as systemd would), except
    those whose state the run's figures depend on (``essential``): their exit ends the run with an error."""

    def __init__(self, stack: Stack, events: list[Event]) -> None:
        self.stack = stack
        self.events = events
        self.starters: dict[str, Callable[[], Child]] = {}
        self.essential: set[str] = set()
        self.current: dict[str, Child] = {}
        # Every process group each service ever had, so the CPU meter also counts the killed ones.
        self.groups: dict[str, set[int]] = defaultdict(set)
        self.lock = threading.Lock()

    def add(self, name: str, starter: Callable[[], Child], *, essential: bool = False) -> Child:
        self.starters[name] = starter
        if essential:
            self.essential.add(name)
        return self.start(name)

    def start(self, name: str) -> Child:
        with self.lock:
            child = self.starters[name]()
            self.current[name] = child
            self.groups[name.split(" ")[0]].add(child.pid)
            return child

    def kill(self, name: str) -> None:
        with self.lock:
            self.stack.kill(self.current.pop(name))

    def stop(self, name: str) -> None:
        with self.lock:
            child = self.current.pop(name)
        self.stack.stop(child)

    def supervise(self) -> None:
        for name, child in list(self.current.items()):
            code = child.process.poll()
            if code is not None:
                if name in self.essential:
                    raise RuntimeError(
                        f"{name} (pid {child.pid}) exited with code {code} during the run: what it recorded is lost, "
                        "so the run cannot be judged (code 0 means a SIGTERM/SIGINT from outside the run)"
                    )
                self.events.append(Event(time.time(), f"{name} exited by itself", f"exit code {code}; restarted"))
                log(f"{name} exited by itself (code {code}); restarting it")
                with self.lock:
                    if child in self.stack.children:
                        self.stack.children.remove(child)
                    self.current.pop(name, None)
                self.start(name)


# --- A killed worker's messages -------------------------------------------------------------------------------------


@dataclass
class HeldMessage:
    pk: int
    claim_token: str
    touser: str
    client_msg_id: str
    # Last poll that saw it still in its claim of the kill, and the first that saw it out (with its status then).
    last_held: float = 0.0
    left_at: float | None = None
    status_when_left: str = ""


class KillTracker:
    """Follows the messages that were ``sending`` when a qcluster was killed, until each has left that claim."""

    POLL_SECONDS = 0.5

    def __init__(self, name: str, killed_at: float, held: list[HeldMessage]) -> None:
        self.name = name
        self.killed_at = killed_at
        self.restarted_at: float | None = None
        self.messages = {message.pk: message for message in held}
        for message in held:
            message.last_held = killed_at
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"kill-tracker-{name}", daemon=True)

    def _run(self) -> None:
        from django import db

        from messaging.models import Message

        remaining = set(self.messages)
        try:
            while remaining and not self.stop.wait(self.POLL_SECONDS):
                now = time.time()
                try:
                    rows = list(Message.objects.filter(pk__in=remaining).values_list("pk", "status", "claim_token"))
                except db.Error:
                    db.connection.close()
                    continue
                for pk, status, claim_token in rows:
                    message = self.messages[pk]
                    if status == "sending" and claim_token == message.claim_token:
                        message.last_held = now
                    else:
                        message.left_at, message.status_when_left = now, status
                        remaining.discard(pk)
        finally:
            db.connection.close()

    def analyse(
        self, sends: dict[tuple[str, str], list[dict[str, Any]]], final_status: dict[int, str], until: float
    ) -> dict[str, Any]:
        """The dead worker's messages (those still in the kill's claim HELD_AFTER_KILL_SECONDS later) and when each
        was settled: out of the dead claim and sent again (its first attempt at the sandbox after the last poll
        that saw it held), or ended without a resend; seconds from the kill.

        The rest of the snapshot was the live cluster's, whose batches finished on their own.
        """
        dead = [m for m in self.messages.values() if m.last_held - self.killed_at >= HELD_AFTER_KILL_SECONDS]
        settled: list[float] = []
        unsettled = ended_unsent = 0
        resend_outcomes: Counter[str] = Counter()
        for message in dead:
            if message.left_at is None:
                unsettled += 1
                continue
            later = [s for s in sends.get((message.touser, message.client_msg_id), []) if s["time"] > message.last_held]
            if later:
                resend_outcomes[later[0]["outcome"]] += 1
                settled.append(max(message.left_at, later[0]["time"]) - self.killed_at)
            elif final_status.get(message.pk) in ("sent", "delivered", "failed"):
                ended_unsent += 1
                settled.append(message.left_at - self.killed_at)
            else:
                unsettled += 1
        return {
            "name": self.name,
            "snapshot": len(self.messages),
            "live": len(self.messages) - len(dead),
            "dead": len(dead),
            "settled": len(settled),
            "ended_unsent": ended_unsent,
            "unsettled": unsettled,
            "p50": percentile(settled, 0.5),
            "max": max(settled, default=math.nan),
            "resend_outcomes": dict(resend_outcomes),
            "observed": until - self.killed_at,
        }


# --- Reading the results -------------------------------------------------------------------------------------------


def histogram_quantiles(text: str, name: str, fractions: tuple[float, ...]) -> dict[str, Any] | None:
    """Quantiles of a Prometheus histogram from its cumulative buckets (summed over every label set), interpolated
    within a bucket as PromQL's histogram_quantile does; None when the metric is absent."""
    buckets: dict[float, float] = defaultdict(float)
    prefix = f"{name}_bucket{{"
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        labels, _, value = line.rpartition("}")
        bound = re.search(r'le="([^"]+)"', labels)
        if bound is not None:
            buckets[float(bound.group(1))] += float(value.split()[0])
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    found: dict[str, Any] = {"count": int(total)}
    for fraction in fractions:
        if not total:
            found[fraction] = None
            continue
        rank = fraction * total
        lower_bound, lower_count = 0.0, 0.0
        for bound in bounds:
            count = buckets[bound]
            if count >= rank:
                if math.isinf(bound):
                    found[fraction] = (lower_bound, True)
                else:
                    share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
                    found[fraction] = (lower_bound + (bound - lower_bound) * share, False)
                break
            lower_bound, lower_count = bound, count
    return found


def reason_of(errmsg: str) -> str:
    text = " ".join(RID_RE.sub("", errmsg or "").split())
    if not text:
        return "—"
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


def sends_by_key(sends: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in sends:
        grouped[(record["touser"], record["client_msg_id"])].append(record)
    for records in grouped.values():
        records.sort(key=lambda record: record["time"])
    return grouped


def retry_gaps(
    grouped: dict[tuple[str, str], list[dict[str, Any]]], excluded: set[tuple[str, str]]
) -> dict[int, list[float]]:
    """Seconds from a ``-1`` answer to the next attempt of the same message at the sandbox, by the number of the
    attempt that failed.  Messages a killed worker held are left out (their next attempt waited for recovery, not
    for a backoff); an answer the client never got (dropped) is left out too (the client learnt of it later)."""
    gaps: dict[int, list[float]] = defaultdict(list)
    for key, records in grouped.items():
        if key in excluded:
            continue
        for number, (record, following) in enumerate(itertools.pairwise(records), start=1):
            if record["outcome"] == "failed" and record["errcode"] == -1 and not record["reply_dropped"]:
                gaps[number].append(following["time"] - record["time"])
    return gaps


# --- The run ------------------------------------------------------------------------------------------------------


class ChaosRun:
    """One run: its own servers and processes, the load, the faults it applies and everything it records."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.figures: dict[str, Any] = {
            "load_start": load_average(),
            "started": datetime.now(UTC),
            "cpus": os.cpu_count(),
        }
        self.scratch = Path(tempfile.mkdtemp(prefix="wxnotify-chaos-"))
        # The postgres user must reach the cluster's directory inside.
        self.scratch.chmod(0o711)
        self.logs = Path(args.logs).resolve() if args.logs else self.scratch / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.scratch / "metrics").mkdir()
        self.pg = ThrowawayPostgres(self.scratch / "postgres", free_port())
        self.redis_port, sandbox_port, web_port = free_port(), free_port(), free_port()
        self.sandbox_port, self.web_port = sandbox_port, web_port
        self.sandbox = f"http://127.0.0.1:{sandbox_port}"
        self.web = f"http://127.0.0.1:{web_port}"
        self.singles_total = int(args.single_rate * args.seconds)
        env = stack_environment(
            self.pg.url(DATABASE),
            f"redis://127.0.0.1:{self.redis_port}/0",
            sandbox_port,
            str(self.scratch / "metrics"),
            **API_THROTTLES_RAISED,
            WXNOTIFY_RESEND_WINDOW_SECONDS=str(args.resend_window),
        )
        self.env = env
        self.events: list[Event] = []
        self.stack = Stack(env)
        self.services = Services(self.stack, self.events)
        self.abort = threading.Event()
        self.trackers: list[KillTracker] = []
        # Every postmaster the run started (one per PostgreSQL start), for the CPU meter.
        self.postmasters: set[int] = set()
        self.next_progress = math.inf
        self.stream: SingleStream | None = None

    def run(self) -> dict[str, Any]:
        failed = True
        try:
            self._start_stack()
            self._warm_up()
            self._load_with_faults()
            self._drain()
            self._collect()
            failed = False
            return self.figures
        finally:
            self.abort.set()
            for tracker in self.trackers:
                tracker.stop.set()
            if failed:
                print_log_tails(self.logs)
            self.stack.stop_all()
            self.pg.destroy()
            shutil.rmtree(self.scratch, ignore_errors=True)

    # -- set-up --

    def _start_stack(self) -> None:
        from sandbox.demo import DEMO_ACCOUNT

        args, stack, services, logs = self.args, self.stack, self.services, self.logs
        log(f"throwaway PostgreSQL on port {self.pg.port}, Redis on {self.redis_port} (under {self.scratch})")
        self.pg.init()
        self.pg.start()
        self.postmasters.add(self.pg.postmaster_pid() or 0)
        self.pg.create_database(DATABASE)
        redis_dir = self.scratch / "redis"
        redis_dir.mkdir()
        redis_argv = redis_server_argv(self.redis_port, redis_dir)
        services.add("redis", lambda: stack.program("redis", redis_argv, log=logs / "redis.log"))
        stack.wait_for("Redis", lambda: port_is_open(self.redis_port))
        setup_django(self.env)
        from django.conf import settings
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=0)
        self.figures["settings"] = service_settings(settings)
        sandbox_args = [
            "wechat_sandbox",
            f"--port={self.sandbox_port}",
            f"--followers={args.recipients}",
            f"--latency-ms={args.latency_ms}",
            f"--dedupe-window-s={args.dedupe_window}",
            f"--drop-reply-hang-ms={args.hang_ms}",
            f"--message-capacity={max(100_000, 4 * (args.recipients + self.singles_total))}",
        ]
        if args.no_receipts:
            sandbox_args.append("--no-receipts")
        else:
            sandbox_args.append(f"--callback-url={self.web}/wechat/callback/{{appid}}/")
        # The sandbox's log of sends is the evidence of every delivery: losing it would void the run.
        services.add(
            "sandbox", lambda: stack.manage("sandbox", *sandbox_args, log=logs / "sandbox.log"), essential=True
        )
        stack.wait_for("the sandbox", lambda: port_is_open(self.sandbox_port))

        account = register_account(DEMO_ACCOUNT)
        template_ids = account.templates.filter(is_active=True).values_list("template_id", flat=True)
        self.template_id = next(tid for tid in template_ids if tid.startswith("sandbox-order-shipped"))
        log(f"inserting {args.recipients} followers")
        insert_followers(account, args.recipients)
        token = api_token(account)
        for slot in range(QCLUSTERS):
            name = f"qcluster {slot + 1}"
            services.add(name, lambda name=name: stack.manage(name, "qcluster", log=logs / "qcluster.log"))
        gunicorn_argv = [
            "-m",
            "gunicorn",
            "wxnotify.wsgi:application",
            "--config=gunicorn.conf.py",
            f"--bind=127.0.0.1:{self.web_port}",
            "--log-level=warning",
        ]
        services.add("gunicorn", lambda: stack.spawn("gunicorn", gunicorn_argv, log=logs / "gunicorn.log"))
        self.sessions = ThreadSessions({"Authorization": f"Token {token}", "Content-Type": "application/json"})

        def api_up() -> bool:
            try:
                return self.sessions.get().get(f"{self.web}/api/v1/templates/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        stack.wait_for("gunicorn", api_up)

    def _warm_up(self) -> None:
        """Connections, lazy imports and the workers' first token, without faults; then the faults go on."""
        from messaging.models import Message
        from sandbox.demo import DEMO_APPID
        from sandbox.state import seeded_openid

        self.openids = [seeded_openid(DEMO_APPID, index) for index in range(self.args.recipients)]
        self.run_id = secrets.token_hex(3)
        for index in range(min(20, len(self.openids))):
            body = message_body(DEMO_APPID, self.template_id, self.openids[index], f"warm-{self.run_id}-{index}")
            self.sessions.get().post(
                f"{self.web}/api/v1/messages/", data=json.dumps(body).encode(), timeout=10
            ).raise_for_status()
        deadline = time.monotonic() + 60
        while Message.objects.filter(status__in=UNFINISHED).exists():
            self.services.supervise()
            if time.monotonic() > deadline:
                raise RuntimeError("the warm-up's messages were not sent within 60 s")
            time.sleep(0.2)
        # The run's figures count from here: the warm-up's messages go, the sandbox's counters are read as deltas.
        Message.objects.all().delete()
        requests.post(
            f"{self.sandbox}/sandbox/faults",
            json={
                "error_rate": self.args.error_rate,
                "error_code": -1,
                "drop_reply_rate": self.args.drop_reply_rate,
                "drop_reply_mode": self.args.drop_mode,
            },
            timeout=10,
        ).raise_for_status()

    # -- load and faults --

    def _load_with_faults(self) -> None:
        from sandbox.demo import DEMO_APPID

        args, services = self.args, self.services
        self.meter = CpuMeter(
            {
                "qclusters": lambda pid, sample: sample.pgid in services.groups["qcluster"],
                "gunicorn": lambda pid, sample: sample.pgid in services.groups["gunicorn"],
                "sandbox": lambda pid, sample: sample.pgid in services.groups["sandbox"],
                "postgres": lambda pid, sample: pid in self.postmasters or sample.ppid in self.postmasters,
                "redis": lambda pid, sample: sample.pgid in services.groups["redis"],
                "bench client": lambda pid, sample: pid == os.getpid(),
            }
        )
        bodies = []
        for index in range(self.singles_total):
            cmid = f"chaos-{self.run_id}-{index}"
            openid = self.openids[index % len(self.openids)]
            bodies.append((cmid, json.dumps(message_body(DEMO_APPID, self.template_id, openid, cmid)).encode()))
        self.stream = SingleStream(
            [f"{self.web}/api/v1/messages/"], self.sessions, bodies, args.single_rate, self.abort
        )
        state = requests.get(f"{self.sandbox}/sandbox/state", timeout=10).json()
        self.figures["sandbox_before"] = state["accounts"][DEMO_APPID]

        self.meter.start()
        t0 = self.figures["t0"] = time.time()
        log(f"campaign of {args.recipients} via the API, then {self.singles_total} singles at {args.single_rate:g}/s")
        campaign = {
            "account": DEMO_APPID,
            "template_id": self.template_id,
            "data": TEMPLATE_DATA,
            "recipients": {"openids": self.openids},
            "name": "chaos run",
        }
        response = self.sessions.get().post(f"{self.web}/api/v1/campaigns/", data=json.dumps(campaign), timeout=300)
        if response.status_code != 202:
            raise RuntimeError(f"campaign refused: HTTP {response.status_code} {response.text[:300]}")
        accept_seconds = time.time() - t0
        self.figures["campaign"] = {"id": response.json()["id"], "accept_seconds": accept_seconds}
        self.events.append(Event(t0, "campaign accepted", f"{args.recipients:,} recipients in {accept_seconds:.1f} s"))
        self.stream.start()
        self.next_progress = time.time() + PROGRESS_EVERY_SECONDS

        for fraction, fault, slot in FAULT_PLAN:
            self._wait(t0 + fraction * args.seconds)
            if fault == "kill_qcluster":
                self._kill_qcluster(f"qcluster {slot + 1}")
            elif fault == "invalidate_tokens":
                reply = requests.post(
                    f"{self.sandbox}/sandbox/tokens/invalidate", json={"appid": DEMO_APPID}, timeout=10
                ).json()
                self.events.append(Event(time.time(), "access tokens invalidated", f"{reply['revoked']} revoked"))
                log("access tokens invalidated")
            elif fault == "restart_redis":
                self._restart_redis()
            elif fault == "restart_postgres":
                self._restart_postgres()
        self.figures["last_fault_at"] = max(event.ended or event.at for event in self.events)
        self._wait(math.inf, done=lambda: not self.stream.thread.is_alive())
        self.figures["load_end"] = time.time()
        log(f"load done: {self.stream.accepted()} of {self.singles_total} singles accepted; draining")

    def _wait(self, until: float, done: Callable[[], bool] | None = None, every: float = 0.2) -> bool:
        """Until the time ``until`` or ``done()``, supervising the processes and printing progress; True if done."""
        while time.time() < until:
            self.services.supervise()
            if time.time() >= self.next_progress:
                self._progress()
                self.next_progress += PROGRESS_EVERY_SECONDS
            if done is not None and done():
                return True
            time.sleep(max(0.0, min(every, until - time.time())))
        return False

    def _progress(self) -> None:
        counts = with_database(status_counts)
        log(
            f"t={time.time() - self.figures['t0']:.0f}s singles accepted {self.stream.accepted()}; "
            + ", ".join(f"{status} {count}" for status, count in sorted(counts.items()))
        )

    def _kill_qcluster(self, name: str) -> None:
        """kill -9 the qcluster's whole process group; the messages ``sending`` just before are followed from here
        (those a worker killed earlier still holds are followed by that kill's tracker already)."""
        from messaging.models import Message

        already = {(m.pk, m.claim_token) for tracker in self.trackers for m in tracker.messages.values()}

        def sending() -> list[HeldMessage]:
            rows = Message.objects.filter(status="sending").values_list("pk", "claim_token", "touser", "client_msg_id")
            return [HeldMessage(*row) for row in rows if (row[0], row[1]) not in already]

        deadline = time.monotonic() + KILL_WAIT_FOR_SENDING_SECONDS
        held = with_database(sending)
        while not held and time.monotonic() < deadline:
            time.sleep(0.2)
            held = with_database(sending)
        self.services.kill(name)
        tracker = KillTracker(name, time.time(), held)
        tracker.thread.start()
        self.trackers.append(tracker)
        log(f"killed {name} ({len(held)} messages sending)")
        time.sleep(self.args.restart_delay)
        self.services.start(name)
        tracker.restarted_at = time.time()
        detail = f"{len(held)} messages were sending; restarted after {tracker.restarted_at - tracker.killed_at:.1f} s"
        self.events.append(Event(tracker.killed_at, f"kill -9 {name} (process group)", detail, tracker.restarted_at))

    def _restart_redis(self) -> None:
        stopped = time.time()
        self.services.stop("redis")
        log("Redis stopped")
        time.sleep(self.args.down_seconds)
        self.services.start("redis")
        deadline = time.monotonic() + 30
        while not port_is_open(self.redis_port) and time.monotonic() < deadline:
            time.sleep(0.1)
        started = time.time()
        detail = f"down {started - stopped:.1f} s"
        self.events.append(Event(stopped, "Redis stopped, started again empty", detail, started))
        log("Redis started again")

    def _restart_postgres(self) -> None:
        stopped = time.time()
        self.pg.stop("fast")
        log("PostgreSQL stopped")
        time.sleep(self.args.down_seconds)
        self.pg.start()
        self.postmasters.add(self.pg.postmaster_pid() or 0)
        started = time.time()
        detail = f"down {started - stopped:.1f} s"
        self.events.append(Event(stopped, "PostgreSQL stopped (-m fast), started again", detail, started))
        log("PostgreSQL started again")

    # -- drain and results --

    def _drain(self) -> None:
        from messaging.models import Message

        def drained() -> bool:
            return not with_database(lambda: Message.objects.filter(status__in=UNFINISHED).exists())

        finished = self._wait(time.time() + self.args.drain_timeout, done=drained, every=0.5)
        self.figures["drained_at"] = time.time() if finished else None
        if not finished:
            log(f"not drained after {self.args.drain_timeout:.0f} s")
        # Receipts of the last sends arrive a few hundred milliseconds after them.
        time.sleep(2)
        for tracker in self.trackers:
            tracker.stop.set()
            tracker.thread.join()

    def _collect(self) -> None:
        """The outcome: every message row, the campaign, the sandbox's counters and send log, /metrics."""
        from messaging.models import Campaign, Message
        from sandbox.demo import DEMO_APPID

        self.figures["cpu"] = self.meter.stop()
        self.figures["ended"] = time.time()
        columns = ("pk", "client_msg_id", "touser", "campaign_id", "status", "errcode", "errmsg", "attempts")
        self.figures["rows"] = with_database(
            lambda: [dict(zip(columns, row, strict=True)) for row in Message.objects.values_list(*columns).iterator()]
        )
        campaign = with_database(lambda: Campaign.objects.get(pk=self.figures["campaign"]["id"]))
        self.figures["campaign_recipients"] = campaign.recipient_count
        self.figures["unfinished"] = with_database(lambda: Message.objects.filter(status__in=UNFINISHED).count())
        self.figures["sandbox_state"] = requests.get(f"{self.sandbox}/sandbox/state", timeout=30).json()
        sends = requests.get(
            f"{self.sandbox}/sandbox/sends", params={"appid": DEMO_APPID, "since": self.figures["t0"]}, timeout=120
        )
        self.figures["sends"] = sends.json()["sends"]
        try:
            self.figures["metrics"] = requests.get(f"{self.web}/metrics", timeout=30).text
        except requests.RequestException as exc:
            self.figures["metrics"] = ""
            print(f"/metrics unreachable: {exc}", file=sys.stderr)
        self.figures.update(
            stream=self.stream, kills=self.trackers, events=self.events, load_end_average=load_average()
        )


def status_counts() -> dict[str, int]:
    from django.db.models import Count

    from messaging.models import Message

    return dict(Message.objects.values_list("status").annotate(n=Count("id")).order_by())


def service_settings(settings: Any) -> dict[str, Any]:
    """The pipeline settings in effect for every process of the run (None: this code has no such setting)."""
    names = (
        "WXNOTIFY_MAX_ATTEMPTS",
        "WXNOTIFY_RETRY_BASE_DELAY",
        "WXNOTIFY_RETRY_MAX_DELAY",
        "WXNOTIFY_SEND_LEASE_SECONDS",
        "WXNOTIFY_REENQUEUE_AFTER_SECONDS",
        "WXNOTIFY_RESEND_WINDOW_SECONDS",
        "WECHAT_READ_TIMEOUT",
    )
    return {name: getattr(settings, name, None) for name in names}


def print_log_tails(logs: Path, lines: int = 20) -> None:
    for path in sorted(logs.glob("*.log")):
        with contextlib.suppress(OSError):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            print(f"--- last lines of {path.name} ---", file=sys.stderr)
            print("\n".join(tail), file=sys.stderr)


# --- Report -------------------------------------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    if ok is None:
        return "**not measured**"
    return "met" if ok else "**MISSED**"


def seconds(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.1f} s"


def analyse(figures: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of the report from what the run collected."""
    from sandbox.demo import DEMO_APPID

    rows: list[dict[str, Any]] = figures["rows"]
    stream: SingleStream = figures["stream"]
    sends: list[dict[str, Any]] = figures["sends"]
    grouped = sends_by_key(sends)
    after = figures["sandbox_state"]["accounts"][DEMO_APPID]
    before = figures["sandbox_before"]
    counters = {name: after[name] - before[name] for name in ("sends", "delivered", "duplicates", "redelivered")}
    campaign_id = figures["campaign"]["id"]
    found: dict[str, Any] = {}

    accepted = [request for request in stream.requests if request.status is not None]
    found["singles"] = {
        "scheduled": len(stream.requests),
        "accepted": len(accepted),
        "answers": Counter(request.status for request in accepted),
        "retried": sum(1 for request in accepted if request.tries > 1),
        "errors": sum((request.errors for request in stream.requests), Counter()),
        "not_accepted": Counter(request.outcome for request in stream.requests if request.status is None),
        "accept_p50": percentile([r.accepted_at - r.scheduled for r in accepted], 0.5),
        "accept_p99": percentile([r.accepted_at - r.scheduled for r in accepted], 0.99),
        "accept_max": max((r.accepted_at - r.scheduled for r in accepted), default=math.nan),
    }
    by_cmid = {row["client_msg_id"]: row for row in rows if row["campaign_id"] is None}
    campaign_rows = [row for row in rows if row["campaign_id"] == campaign_id]
    missing_singles = [r.client_msg_id for r in accepted if r.client_msg_id not in by_cmid]
    deliveries = {key: sum(1 for s in records if s["outcome"] in DELIVERIES) for key, records in grouped.items()}
    sent_not_delivered = [
        row
        for row in rows
        if row["status"] in ("sent", "delivered") and not deliveries.get((row["touser"], row["client_msg_id"]))
    ]
    failed_but_delivered = [
        row for row in rows if row["status"] == "failed" and deliveries.get((row["touser"], row["client_msg_id"]))
    ]
    found["lost"] = {
        "singles_without_row": len(missing_singles),
        "campaign_short": args.recipients - figures["campaign_recipients"],
        "campaign_rows_short": figures["campaign_recipients"] - len(campaign_rows),
        "sent_never_delivered": len(sent_not_delivered),
    }
    found["lost_total"] = (
        len(missing_singles)
        + max(0, found["lost"]["campaign_short"])
        + max(0, found["lost"]["campaign_rows_short"])
        + len(sent_not_delivered)
    )
    found["failed_without_reason"] = sum(1 for row in rows if row["status"] == "failed" and not row["errmsg"])
    found["failed_but_delivered"] = len(failed_but_delivered)
    found["statuses"] = {
        "campaign": Counter(row["status"] for row in campaign_rows),
        "singles": Counter(row["status"] for row in rows if row["campaign_id"] is None),
    }
    reasons: dict[tuple[str, Any, str], Counter[str]] = defaultdict(Counter)
    for row in rows:
        part = "campaign" if row["campaign_id"] is not None else "singles"
        reasons[(row["status"], row["errcode"], reason_of(row["errmsg"]))][part] += 1
    found["reasons"] = reasons
    found["unfinished"] = figures["unfinished"]

    duplicated = {key: n for key, n in deliveries.items() if n > 1}
    found["deliveries"] = {
        "messages_delivered": sum(1 for n in deliveries.values() if n),
        "duplicated_messages": len(duplicated),
        "extra_deliveries": sum(n - 1 for n in duplicated.values()),
        "deduplicated_resends": sum(1 for s in sends if s["outcome"] == "deduplicated"),
        "replies_dropped": sum(1 for s in sends if s["reply_dropped"]),
        "failed_answers": Counter(s["errcode"] for s in sends if s["outcome"] == "failed"),
        "attempts": len(sends),
        "log_complete": len(sends) == counters["sends"],
        "counters": counters,
        "unauthenticated": figures["sandbox_state"]["unauthenticated_errors"],
        "examples": sorted(duplicated)[:3],
    }

    quantiles = histogram_quantiles(figures["metrics"], LATENESS_METRIC, (0.5, 0.99))
    found["lateness"] = quantiles
    final_status = {row["pk"]: row["status"] for row in rows}
    kills = [tracker.analyse(grouped, final_status, figures["ended"]) for tracker in figures["kills"]]
    found["kills"] = kills
    excluded = {(m.touser, m.client_msg_id) for tracker in figures["kills"] for m in tracker.messages.values()}
    found["gaps"] = retry_gaps(grouped, excluded)
    found["tokens"] = {
        endpoint: count - before["token_fetches"].get(endpoint, 0) for endpoint, count in after["token_fetches"].items()
    }
    drained_at = figures["drained_at"]
    found["drain_after_last_fault"] = (drained_at - figures["last_fault_at"]) if drained_at else None
    found["drain_after_load"] = (drained_at - figures["load_end"]) if drained_at else None
    return found


def report(figures: dict[str, Any], found: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    t0 = figures["t0"]
    singles = found["singles"]
    lost = found["lost"]
    dl = found["deliveries"]
    settings = figures["settings"]
    lateness = found["lateness"]
    kills = found["kills"]
    accepted_total = singles["accepted"] + figures["campaign_recipients"]

    if lateness is None:
        lateness_text, lateness_ok = f"not available (no `{LATENESS_METRIC}` in /metrics)", None
    elif not lateness["count"]:
        lateness_text, lateness_ok = "no retry observed by the metric", None
    else:

        def shown(value: tuple[float, bool]) -> str:
            amount, above = value
            return f"> {amount:.1f} s" if above else f"{amount:.2f} s"

        p99, above = lateness[0.99]
        lateness_text = f"p50 {shown(lateness[0.5])}, p99 {shown(lateness[0.99])} ({lateness['count']} retries)"
        lateness_ok = (not above) and p99 <= LATENESS_TARGET_SECONDS
    resend_max = max((kill["max"] for kill in kills), default=math.nan)
    never = sum(kill["unsettled"] for kill in kills)
    measured = [kill for kill in kills if kill["dead"]]
    resend_ok = (not never and resend_max <= RESEND_TARGET_SECONDS) if measured else None
    if not measured:
        resend_text = "no kill caught a worker holding messages"
    elif never:
        observed = min(kill["observed"] for kill in kills if kill["unsettled"])
        resend_text = f"{never} never sent again, watched for {observed:.0f} s after their kill"
    else:
        resend_text = f"slowest {seconds(resend_max)}"
    rows = [
        (
            "Lost: accepted but no message, or marked sent and never delivered",
            f"{found['lost_total']} (singles without a row {lost['singles_without_row']}, campaign recipients short "
            f"{lost['campaign_short']}, campaign rows short {lost['campaign_rows_short']}, sent/delivered but never "
            f"delivered at the sandbox {lost['sent_never_delivered']})",
            "0",
            verdict(found["lost_total"] == 0),
        ),
        (
            "Duplicate deliveries (a client_msg_id delivered twice)",
            f"{dl['duplicated_messages']} messages, {dl['extra_deliveries']} extra deliveries",
            "0",
            verdict(dl["duplicated_messages"] == 0),
        ),
        (
            f"Stuck: queued or sending after the drain ({args.drain_timeout:.0f} s at most)",
            str(found["unfinished"]),
            "0",
            verdict(found["unfinished"] == 0),
        ),
        ("Retry lateness (/metrics)", lateness_text, f"p99 ≤ {LATENESS_TARGET_SECONDS:.0f} s", verdict(lateness_ok)),
        (
            "A killed worker's messages sent again (both kills)",
            resend_text,
            f"≤ {RESEND_TARGET_SECONDS:.0f} s",
            verdict(resend_ok),
        ),
    ]
    drain = found["drain_after_last_fault"]
    lines = [
        f"{SECTION_TITLE}: {args.label} — {figures['started']:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}`",
        "",
        f"Code: `{git_revision()}`. Machine: {figures['cpus']} CPUs, Python {platform.python_version()}, shared with "
        f"other work; load average (1/5/15 min) {figures['load_start']} at start, {figures['load_end_average']} at "
        "end.",
        f"Stack: a PostgreSQL cluster and a redis-server of the run's own (Redis without persistence: the broker, "
        f"cache and locks), {QCLUSTERS} `qcluster` (Redis broker), gunicorn with gunicorn.conf.py, the sandbox "
        f"({args.latency_ms} ms per send, {args.error_rate:.0%} of sends answered `-1`, {args.drop_reply_rate:.0%} of "
        f"delivered sends' replies dropped (`{args.drop_mode}`: {DROP_MODES[args.drop_mode]}), "
        f"client_msg_id de-duplicated for {args.dedupe_window:.0f} s, "
        + ("no receipts" if args.no_receipts else "delivery receipts pushed to gunicorn's callback URL")
        + f"). Service settings: {', '.join(f'{k}={v}' for k, v in settings.items())} "
        "(None: not a setting of this code).",
        f"Load: a campaign of {args.recipients:,} recipients (accepted in "
        f"{figures['campaign']['accept_seconds']:.1f} s) and single sends at {args.single_rate:g}/s for "
        f"{args.seconds:.0f} s, each retried by its client with the same client_msg_id after a 5xx or a connection "
        f"error; then a drain of at most {args.drain_timeout:.0f} s.",
        "",
        "| target | measured | goal | |",
        "|---|---|---|---|",
        *(f"| {name} | {value} | {goal} | {result} |" for name, value, goal, result in rows),
        "",
        f"Faults (seconds from the campaign's acceptance; the load ran {figures['load_end'] - t0:.0f} s):",
        "",
        "| at s | fault | |",
        "|---:|---|---|",
        *(
            f"| {event.at - t0:.1f} | {event.what} | {event.detail} |"
            for event in sorted(figures["events"], key=lambda event: event.at)
        ),
        "",
        f"Accepted: **{accepted_total:,}** messages: the campaign's {figures['campaign_recipients']:,} recipients "
        f"and {singles['accepted']:,} of {singles['scheduled']:,} single sends "
        f"({dict(sorted(singles['answers'].items()))} by HTTP status; not accepted: "
        f"{dict(singles['not_accepted']) or 'none'}). {singles['retried']} singles needed more than one try; the "
        f"client's failed tries: {dict(singles['errors'].most_common()) or 'none'}. Time from a single's scheduled "
        f"send to its acceptance: p50 {seconds(singles['accept_p50'])}, p99 {seconds(singles['accept_p99'])}, max "
        f"{seconds(singles['accept_max'])}.",
        "",
        "How they ended (status, errcode, start of errmsg without WeChat's rid):",
        "",
        "| status | errcode | reason | campaign | singles |",
        "|---|---:|---|---:|---:|",
        *(
            f"| {status} | {'' if errcode is None else errcode} | {reason.replace('|', '/')} | "
            f"{counts['campaign']} | {counts['singles']} |"
            for (status, errcode, reason), counts in sorted(
                found["reasons"].items(), key=lambda item: -sum(item[1].values())
            )
        ),
        "",
        f"Still queued or sending after the drain: **{found['unfinished']}**"
        + (
            f" (drained {seconds(drain)} after the last fault, {seconds(found['drain_after_load'])} after the load "
            "ended)."
            if drain is not None
            else f" (not drained within {args.drain_timeout:.0f} s of the load's end)."
        )
        + f" Failed without a reason: {found['failed_without_reason']}. Failed although the sandbox delivered them "
        f"(an outcome the service could not know): {found['failed_but_delivered']}.",
        "",
        f"At the sandbox: {dl['attempts']:,} send attempts logged"
        + ("" if dl["log_complete"] else f" (**log incomplete**: counters say {dl['counters']['sends']})")
        + f"; {dl['messages_delivered']:,} messages delivered, **{dl['duplicated_messages']}** of them more than once "
        f"({dl['extra_deliveries']} extra deliveries"
        + (f", e.g. {', '.join(cmid for _, cmid in dl['examples'])}" if dl["examples"] else "")
        + f"); {dl['deduplicated_resends']} resends answered from the de-duplication (not delivered again); "
        f"{dl['replies_dropped']} replies dropped after delivering; answers with an error "
        f"{dict(sorted(dl['failed_answers'].items()))}; sends refused for the token {dl['unauthenticated'] or 'none'}. "
        f"Sandbox counters: {dl['counters']}.",
        "",
        f"Access tokens fetched (sandbox, all processes): {found['tokens']}.",
        "",
        "Messages `sending` when a qcluster was killed: those out of that claim within "
        f"{HELD_AFTER_KILL_SECONDS:.0f} s were the live cluster's (its batch finished); the rest were the dead "
        "worker's. One of those is settled when it is out of the dead claim and its next attempt reached the sandbox "
        "(or it ended without one); seconds from the kill:",
        "",
        "| kill | sending at the kill | the live cluster's | the dead worker's | settled | of which ended unsent | "
        "never settled | p50 | max | their next attempt at the sandbox |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *(
            f"| {kill['name']} | {kill['snapshot']} | {kill['live']} | {kill['dead']} | {kill['settled']} | "
            f"{kill['ended_unsent']} | {kill['unsettled']} | {seconds(kill['p50'])} | {seconds(kill['max'])} | "
            f"{kill['resend_outcomes'] or '–'} |"
            for kill in kills
        ),
        "",
        "Retries as the sandbox saw them: seconds from a `-1` answer to the message's next attempt, by the attempt "
        f"that failed (scheduled backoff: {settings['WXNOTIFY_RETRY_BASE_DELAY']} s x 2^(n-1), jittered down to half; "
        "a killed worker's messages and dropped replies left out):",
        "",
        "| failed attempt | retries | p50 | p99 | max | scheduled |",
        "|---:|---:|---:|---:|---:|---|",
        *(gap_line(number, gaps, settings) for number, gaps in sorted(found["gaps"].items())),
        *([] if found["gaps"] else ["| – | 0 | | | | no retry reached the sandbox |"]),
        "",
        "CPU seconds over the run, by process (from /proc; postgres and redis: the run's own): "
        + ", ".join(f"{part} {used:.0f}" for part, used in figures["cpu"].items())
        + f"; {sum(figures['cpu'].values()) / (figures['ended'] - t0):.2f} cores on average.",
        "",
    ]
    return "\n".join(lines)


def gap_line(number: int, gaps: list[float], settings: dict[str, Any]) -> str:
    base = settings["WXNOTIFY_RETRY_BASE_DELAY"] or 0
    cap = settings["WXNOTIFY_RETRY_MAX_DELAY"] or math.inf
    step = min(cap, base * 2 ** (number - 1))
    return (
        f"| {number} | {len(gaps)} | {percentile(gaps, 0.5):.1f} | {percentile(gaps, 0.99):.1f} | {max(gaps):.1f} | "
        f"{step / 2:g}–{step:g} s |"
    )


def git_revision() -> str:
    """The commit measured, marked when the working tree differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=BASE_DIR, capture_output=True, text=True, check=True).stdout.strip()

    try:
        revision = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return revision + (" + uncommitted changes" if dirty else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=20_000, help="campaign size (followers inserted)")
    parser.add_argument("--single-rate", type=float, default=30.0, help="single sends per second through the API")
    parser.add_argument("--seconds", type=float, default=240.0, help="length of the load phase, faults included")
    parser.add_argument("--drain-timeout", type=float, default=420.0, help="longest wait for the drain after the load")
    parser.add_argument("--error-rate", type=float, default=0.3, help="share of sends the sandbox answers -1")
    parser.add_argument("--drop-reply-rate", type=float, default=0.05, help="share of delivered sends' replies lost")
    parser.add_argument("--drop-mode", choices=tuple(DROP_MODES), default="close", help="how a reply is lost")
    parser.add_argument("--hang-ms", type=int, default=30_000, help="longest hang of a dropped reply at the sandbox")
    parser.add_argument("--dedupe-window", type=float, default=90.0, help="sandbox's client_msg_id window, seconds")
    parser.add_argument("--resend-window", type=int, default=60, help="WXNOTIFY_RESEND_WINDOW_SECONDS of the service")
    parser.add_argument("--latency-ms", type=int, default=50, help="sandbox's delay before answering a send")
    parser.add_argument("--down-seconds", type=float, default=5.0, help="how long Redis and PostgreSQL stay down")
    parser.add_argument("--restart-delay", type=float, default=5.0, help="seconds before a killed qcluster restarts")
    parser.add_argument("--no-receipts", action="store_true", help="the sandbox pushes no delivery receipts")
    parser.add_argument("--label", default="latest", help="names the RESULTS.md section: '## Chaos run: LABEL'")
    parser.add_argument("--no-results", action="store_true", help="print only, do not write bench/RESULTS.md")
    parser.add_argument("--logs", help="keep the children's logs in this directory (default: removed after the run)")
    args = parser.parse_args()
    if not re.fullmatch(r"\w+", args.label):
        parser.error("--label must be letters, digits or _ (it names a section of RESULTS.md)")
    if args.recipients < 1 or args.single_rate <= 0 or args.seconds <= 0:
        parser.error("--recipients, --single-rate and --seconds must be positive")
    command = shlex.join([os.path.relpath(sys.executable, Path.cwd()), *sys.argv])
    # SIGTERM unwinds like Ctrl-C, through run()'s cleanup of every child process and server.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    figures = ChaosRun(args).run()
    found = analyse(figures, args)
    text = report(figures, found, args, command)
    print(text)
    if not args.no_results:
        write_results_section(f"{SECTION_TITLE}: {args.label}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
