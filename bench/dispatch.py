"""Dispatch benchmark: how soon an accepted single message is claimed, when requests race and when sends fail.

Runs the real stack (the WeChat sandbox at 50 ms per send, ``qcluster`` workers, the API under gunicorn) on either
configuration, in one run per call:

- ``--config embedded``: SQLite, the database cache and the django-q2 ORM broker (nothing configured), in a
  temporary directory; one qcluster.
- ``--config services``: PostgreSQL (database ``bench_dispatch``, dropped and recreated) and Redis (db 11,
  flushed); two qclusters.

Phases:

1. *Racing twins*: rounds of identical requests (same body, same client_msg_id) sent at once by several threads,
   which must make one message each, claimed and sent at once.
2. *Failing sends*: single messages at a steady rate while the sandbox answers 30% of sends with -1; every
   retry is due a few seconds later (exponential backoff from WXNOTIFY_RETRY_BASE_DELAY).

It reports, per phase, seconds from acceptance to the first claim (``attempted_at`` of messages never retried) and
to ``sent``; for retries, how late each retried message's last attempt was claimed after its scheduled time
(``attempted_at - next_attempt_at``); and what was still queued a fixed time after the last request.  Earlier
releases stored no ``attempted_at``: against them only the times to ``sent`` and the leftovers are reported.
Results replace this benchmark's section of ``bench/RESULTS.md`` for the configuration run::

    .venv/bin/python bench/dispatch.py --config embedded
    .venv/bin/python bench/dispatch.py --config services
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import (
    Stack,
    flush_redis,
    load_average,
    port_is_open,
    recreate_database,
    setup_django,
    stack_environment,
    write_results_section,
)
from bench.pipeline import TEMPLATE_DATA, ThreadSessions, api_token, insert_followers, register_account
from tests.servers import free_port

SERVICES_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_dispatch"
SERVICES_REDIS_URL = "redis://127.0.0.1:6379/11"
LATENCY_MS = 50
FOLLOWERS = 500


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"p50 {percentile(values, 0.5):.2f} s, p99 {percentile(values, 0.99):.2f} s, max {max(values):.2f} s "
        f"(n={len(values)})"
    )


@dataclass
class Phase:
    name: str
    client_msg_ids: list[str] = field(default_factory=list)
    answers: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    ended: float = 0.0


def send(sessions: ThreadSessions, url: str, body: bytes, phase: Phase, lock: threading.Lock) -> None:
    try:
        response = sessions.get().post(url, data=body, timeout=30)
        status = response.status_code
    except requests.RequestException:
        status = 0
    with lock:
        phase.answers[status] = phase.answers.get(status, 0) + 1


def racing_twins(url: str, sessions: ThreadSessions, make_body: Any, rounds: int, twins: int) -> Phase:
    phase = Phase("racing twins")
    lock = threading.Lock()
    for round_index in range(rounds):
        key = f"twin-{round_index}-{os.urandom(3).hex()}"
        phase.client_msg_ids.append(key)
        body = make_body(round_index, key)
        barrier = threading.Barrier(twins)

        def twin(body: bytes = body, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            send(sessions, url, body, phase, lock)

        threads = [threading.Thread(target=twin) for _ in range(twins)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(0.2)
    phase.ended = time.time()
    return phase


def failing_sends(url: str, sessions: ThreadSessions, make_body: Any, count: int, rate: float) -> Phase:
    phase = Phase("failing sends")
    lock = threading.Lock()
    threads = []
    start = time.monotonic()
    for index in range(count):
        key = f"fail-{index}-{os.urandom(3).hex()}"
        phase.client_msg_ids.append(key)
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        thread = threading.Thread(target=send, args=(sessions, url, make_body(index, key), phase, lock))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    phase.ended = time.time()
    return phase


def measure(phase: Phase, leftover_after: float) -> dict[str, Any]:
    """Read what became of the phase's messages; ``leftover_after`` seconds after its last request."""
    from messaging.models import Message

    wait = phase.ended + leftover_after - time.time()
    if wait > 0:
        time.sleep(wait)
    rows = Message.objects.filter(client_msg_id__in=phase.client_msg_ids)
    left = rows.filter(status__in=[Message.Status.QUEUED, Message.Status.SENDING]).count()
    has_attempted_at = any(f.name == "attempted_at" for f in Message._meta.get_fields())
    columns = ["created_at", "sent_at", "attempts", "status", "next_attempt_at"]
    if has_attempted_at:
        columns.append("attempted_at")
    to_sent, to_claim, lateness = [], [], []
    statuses: dict[str, int] = {}
    for row in rows.values(*columns):
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
        if row["sent_at"]:
            to_sent.append((row["sent_at"] - row["created_at"]).total_seconds())
        if has_attempted_at and row["attempted_at"]:
            if row["attempts"] == 1 and row["next_attempt_at"] is None:
                to_claim.append((row["attempted_at"] - row["created_at"]).total_seconds())
            elif row["next_attempt_at"] is not None:
                lateness.append((row["attempted_at"] - row["next_attempt_at"]).total_seconds())
    return {
        "messages": rows.count(),
        "requests": sum(phase.answers.values()),
        "answers": dict(sorted(phase.answers.items())),
        "left": left,
        "statuses": statuses,
        "to_claim": to_claim,
        "to_sent": to_sent,
        "lateness": lateness,
        "has_attempted_at": has_attempted_at,
    }


def drain(seconds: float) -> float:
    from messaging.models import Message

    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if not Message.objects.filter(status__in=[Message.Status.QUEUED, Message.Status.SENDING]).exists():
            break
        time.sleep(1)
    return time.monotonic() - started


@dataclass
class ApiStack:
    """A running stack for API benchmarks: where to send, as whom, and a body maker."""

    config: str
    url: str
    sandbox_url: str
    sessions: ThreadSessions
    template_id: str

    def body(self, index: int, key: str) -> bytes:
        from sandbox.demo import DEMO_APPID
        from sandbox.state import seeded_openid

        openid = seeded_openid(DEMO_APPID, index % FOLLOWERS)
        return json.dumps(
            {"account": DEMO_APPID, "touser": openid, "template_id": self.template_id, "data": TEMPLATE_DATA,
             "client_msg_id": key}
        ).encode()  # fmt: skip


@contextlib.contextmanager
def api_stack(
    config: str,
    *,
    qclusters: int | None = None,
    database_url: str = SERVICES_DATABASE_URL,
    redis_url: str = SERVICES_REDIS_URL,
) -> Iterator[ApiStack]:
    """The sandbox (LATENCY_MS per send, no receipts), qcluster workers and gunicorn (gunicorn.conf.py) on the
    embedded default (SQLite, database cache, ORM broker in a temporary directory) or on PostgreSQL + Redis (the
    given database, dropped and recreated, and Redis database, flushed); the API's throttles raised out of the way;
    a warmed-up API.  Everything is stopped and removed on exit."""
    from sandbox.demo import DEMO_ACCOUNT

    sandbox_port, web_port = free_port(), free_port()
    metrics_dir = tempfile.mkdtemp(prefix="wxnotify-bench-metrics-")
    var_dir = tempfile.mkdtemp(prefix="wxnotify-bench-var-")
    extra = {
        "WXNOTIFY_VAR_DIR": var_dir,
        "WXNOTIFY_API_BURST_RATE": "100000/s",
        "WXNOTIFY_API_SUSTAINED_RATE": "10000000/h",
        "WXNOTIFY_API_SEND_RATE": "100000/s",
    }
    if config == "services":
        recreate_database(database_url)
        flush_redis(redis_url)
    else:
        database_url = redis_url = ""
    qclusters = qclusters or (2 if config == "services" else 1)
    env = stack_environment(database_url, redis_url, sandbox_port, metrics_dir, **extra)
    if not database_url:
        del env["DATABASE_URL"], env["REDIS_URL"]
    setup_django(env)
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    if not database_url:
        call_command("createcachetable", verbosity=0)
    stack = Stack(env)
    try:
        stack.manage(
            "sandbox",
            "wechat_sandbox",
            f"--port={sandbox_port}",
            f"--followers={FOLLOWERS}",
            f"--latency-ms={LATENCY_MS}",
            "--no-receipts",
        )
        stack.wait_for("the sandbox", lambda: port_is_open(sandbox_port))
        account = register_account(DEMO_ACCOUNT)
        template_id = next(
            tid
            for tid in account.templates.filter(is_active=True).values_list("template_id", flat=True)
            if tid.startswith("sandbox-order-shipped")
        )
        insert_followers(account, FOLLOWERS)
        token = api_token(account)
        for number in range(qclusters):
            stack.manage(f"qcluster {number + 1}", "qcluster")
        stack.spawn(
            "gunicorn",
            ["-m", "gunicorn", "wxnotify.wsgi:application", "-c", "gunicorn.conf.py", f"--bind=127.0.0.1:{web_port}"],
        )
        stack.wait_for("gunicorn", lambda: port_is_open(web_port))
        running = ApiStack(
            config=config,
            url=f"http://127.0.0.1:{web_port}/api/v1/messages/",
            sandbox_url=f"http://127.0.0.1:{sandbox_port}",
            sessions=ThreadSessions({"Authorization": f"Token {token}", "Content-Type": "application/json"}),
            template_id=template_id,
        )
        # Warm-up: the first requests of each gunicorn worker import and memoise.
        for index in range(20):
            running.sessions.get().post(
                running.url, data=running.body(index, f"warm-{os.urandom(4).hex()}"), timeout=30
            )
        drain(60)
        yield running
    finally:
        stack.stop_all()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        shutil.rmtree(var_dir, ignore_errors=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {"config": args.config, "load_start": load_average(), "started": datetime.now(UTC)}
    with api_stack(args.config) as stack:
        twins = racing_twins(stack.url, stack.sessions, stack.body, args.rounds, args.twins)
        figures["twins"] = measure(twins, leftover_after=30)
        drain(60)
        requests.post(f"{stack.sandbox_url}/sandbox/faults", json={"error_rate": 0.3}, timeout=10)
        failing = failing_sends(stack.url, stack.sessions, stack.body, args.failing, args.rate)
        figures["failing"] = measure(failing, leftover_after=120)
        requests.post(f"{stack.sandbox_url}/sandbox/faults", json={"error_rate": 0.0}, timeout=10)
        figures["drain_seconds"] = drain(300)
        figures["load_end"] = load_average()
    return figures


def report(figures: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    lines = [
        f"## Dispatch ({figures['config']}) — {figures['started']:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}`",
        "",
        f"Load average (1/5/15 min) at start {figures['load_start']}, at end {figures['load_end']}. Sandbox at "
        f"{LATENCY_MS} ms per send, no receipts; gunicorn with gunicorn.conf.py; "
        f"{'one qcluster' if figures['config'] == 'embedded' else 'two qclusters'}.",
        "",
        "| phase | messages | answers | accepted → claimed | accepted → sent | retry claimed after its time | "
        "queued or sending afterwards |",
        "|---|---:|---|---|---|---|---|",
    ]
    for key, name, after in (
        ("twins", f"{args.rounds} rounds of {args.twins} identical requests", 30),
        ("failing", f"{args.failing} singles at {args.rate}/s, 30% answered -1", 120),
    ):
        result = figures[key]
        lines.append(
            f"| {name} | {result['messages']} | {result['answers']} | {summary(result['to_claim'])} | "
            f"{summary(result['to_sent'])} | {summary(result['lateness'])} | {result['left']} after {after} s |"
        )
    lines += ["", f"Everything drained {figures['drain_seconds']:.0f} s after the failing phase's check.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=["embedded", "services"], default="embedded")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--twins", type=int, default=8)
    parser.add_argument("--failing", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--no-results", action="store_true", help="print the report only")
    args = parser.parse_args()
    figures = run(args)
    command = "python bench/dispatch.py " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    text = report(figures, args, command.strip())
    print(text)
    if not args.no_results:
        write_results_section(f"## Dispatch ({figures['config']})", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
