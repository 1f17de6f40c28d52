"""Webhook benchmark: a 20,000-recipient campaign with a local receiver subscribed to its events.

Runs the real workers on PostgreSQL + Redis — the WeChat sandbox (50 ms per send, no receipts) and two ``qcluster``
processes — and a receiver in this process (a threaded HTTP server on 127.0.0.1 that checks every signature and
records the event id and its arrival time).  The endpoint is written with the ORM, since registration takes only
https and the receiver is plain http; the send-time address check is kept and passes through
``WXNOTIFY_WEBHOOK_ALLOWED_NETWORKS=127.0.0.1/32``.  The campaign is created with ``create_campaign`` (every
subscribed follower), and the run waits until every outbox event has been answered 2xx.

Reported: events delivered per second (first status change to last arrival), the lag from each event's status
change (``occurred_at``, written in the transaction of the change) to its arrival at the receiver (p50/p99/max),
events lost (in the outbox, never received) and duplicate event ids received.  The database ``bench_webhooks`` is
dropped and recreated; Redis database 0 is flushed.  A run takes about a minute and replaces its section of
``bench/RESULTS.md``::

    .venv/bin/python bench/webhooks.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

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
from bench.dispatch import percentile
from bench.pipeline import TEMPLATE_DATA, api_token, insert_followers, register_account
from tests.servers import LOCALHOST, QuietHandler, free_port, serving

DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_webhooks"
REDIS_URL = "redis://127.0.0.1:6379/0"
RECIPIENTS = 20_000
LATENCY_MS = 50
SECRET = "bench-webhook-secret-0123456789"
TIMEOUT_S = 600


class Arrivals:
    """What the receiver got: (event id, arrival time) in order, and signatures that did not check out."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[str, float]] = []
        self.bad_signatures = 0


def receiver_handler(arrivals: Arrivals) -> type[QuietHandler]:
    from webhooks import signing

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            arrived = time.time()
            fields = dict(part.split("=", 1) for part in self.headers.get("X-Wxnotify-Signature", "").split(","))
            good = fields.get("v1") == signing.signature(SECRET, int(fields.get("t", 0)), body)
            with arrivals.lock:
                if good:
                    arrivals.received.append((json.loads(body)["id"], arrived))
                else:
                    arrivals.bad_signatures += 1
            self.send_response(200 if good else 400)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sandbox.demo import DEMO_ACCOUNT

    figures: dict[str, Any] = {"load_start": load_average(), "started": datetime.now(UTC)}
    sandbox_port, receiver_port = free_port(), free_port()
    metrics_dir = tempfile.mkdtemp(prefix="wxnotify-bench-metrics-")
    var_dir = tempfile.mkdtemp(prefix="wxnotify-bench-var-")
    recreate_database(DATABASE_URL)
    flush_redis(REDIS_URL)
    env = stack_environment(
        DATABASE_URL,
        REDIS_URL,
        sandbox_port,
        metrics_dir,
        WXNOTIFY_VAR_DIR=var_dir,
        WXNOTIFY_WEBHOOK_ALLOWED_NETWORKS="127.0.0.1/32",
    )
    setup_django(env)
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    from django.contrib.auth import get_user_model

    from messaging.models import Campaign, Message
    from messaging.services import RecipientSpec, create_campaign
    from webhooks.models import Delivery, Endpoint, Event

    arrivals = Arrivals()
    stack = Stack(env)
    server = ThreadingHTTPServer((LOCALHOST, receiver_port), receiver_handler(arrivals))
    try:
        with serving(server):
            stack.manage(
                "sandbox",
                "wechat_sandbox",
                f"--port={sandbox_port}",
                f"--followers={args.recipients}",
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
            insert_followers(account, args.recipients)
            api_token(account)
            Endpoint.objects.create(
                owner=get_user_model().objects.get(username="bench"),
                account=account,
                url=f"http://{LOCALHOST}:{receiver_port}/hooks",
                secret=SECRET,
                event_types=["message.sent", "message.delivered", "message.failed", "campaign.finished"],
            )
            for number in range(2):
                stack.manage(f"qcluster {number + 1}", "qcluster")
            time.sleep(3)
            started = time.time()
            campaign = create_campaign(
                account=account,
                template_id=template_id,
                data=TEMPLATE_DATA,
                recipients=RecipientSpec.all_subscribed(),
                name="webhook bench",
            )
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline:
                stack.check_alive()
                done = Campaign.objects.filter(pk=campaign.pk, state=Campaign.State.DONE).exists()
                outbox = Event.objects.count()
                if done and outbox and len(arrivals.received) >= outbox:
                    break
                time.sleep(0.5)
            time.sleep(2)  # anything sent twice shows up now
            figures["seconds"] = time.time() - started
            occurred = {event.event_id: event.occurred_at.timestamp() for event in Event.objects.all()}
            figures["statuses"] = dict(Counter(Message.objects.values_list("status", flat=True)))
            figures["kinds"] = dict(Counter(Event.objects.values_list("kind", flat=True)))
            figures["deliveries"] = dict(Counter(Delivery.objects.values_list("state", flat=True)))
            figures["attempts"] = dict(Counter(Delivery.objects.values_list("attempts", flat=True)))
    finally:
        stack.stop_all()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        shutil.rmtree(var_dir, ignore_errors=True)
    with arrivals.lock:
        received = list(arrivals.received)
    counts = Counter(event_id for event_id, _ in received)
    first_arrival = {}
    for event_id, arrived in received:
        first_arrival.setdefault(event_id, arrived)
    lags = [first_arrival[event_id] - occurred[event_id] for event_id in first_arrival if event_id in occurred]
    figures.update(
        outbox=len(occurred),
        received=len(received),
        lost=len(set(occurred) - set(first_arrival)),
        duplicates=sum(count - 1 for count in counts.values() if count > 1),
        unknown=len(set(first_arrival) - set(occurred)),
        bad_signatures=arrivals.bad_signatures,
        lag_p50=percentile(lags, 0.5),
        lag_p99=percentile(lags, 0.99),
        lag_max=max(lags, default=float("nan")),
        rate=len(first_arrival) / (max(first_arrival.values()) - min(occurred.values())) if first_arrival else 0.0,
        load_end=load_average(),
    )
    return figures


def report(figures: dict[str, Any], args: argparse.Namespace) -> str:
    ok = figures["lost"] == 0 and figures["duplicates"] == 0 and figures["bad_signatures"] == 0
    return "\n".join(
        [
            f"## Delivery webhooks — {figures['started']:%Y-%m-%d %H:%M} UTC",
            "",
            "Command: `.venv/bin/python bench/webhooks.py`",
            "",
            f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, shared with other work; load "
            f"average (1/5/15 min) {figures['load_start']} at start, {figures['load_end']} at end.",
            "Stack: PostgreSQL (database `bench_webhooks`, dropped and recreated), Redis `redis://127.0.0.1:6379/0` "
            "(flushed); 2 `qcluster` processes with the default settings (2 workers each; up to 3 webhook tasks "
            "side by side, each posting 16 at a time); WeChat sandbox answering every send after 50 ms, no receipts "
            "(so the events are "
            f"{args.recipients:,} `message.sent` and one `campaign.finished`); a receiver in the benchmark's process "
            "(threaded `http.server` on 127.0.0.1) checking every signature. Campaign to every subscribed follower "
            "through `create_campaign`.",
            "",
            "| figure | measured | target | |",
            "|---|---|---|---|",
            f"| Events delivered per second (first status change → last arrival) | {figures['rate']:.0f}/s | | |",
            f"| Lag, status change → arrival: p50 / p99 / max | {figures['lag_p50'] * 1000:.0f} / "
            f"{figures['lag_p99'] * 1000:.0f} / {figures['lag_max'] * 1000:.0f} ms | | |",
            f"| Events lost (in the outbox, never received) | {figures['lost']} of {figures['outbox']} | 0 | "
            f"{'met' if figures['lost'] == 0 else 'MISSED'} |",
            f"| Duplicate event ids received | {figures['duplicates']} | 0 | "
            f"{'met' if figures['duplicates'] == 0 else 'MISSED'} |",
            f"| Bad signatures | {figures['bad_signatures']} | 0 | "
            f"{'met' if figures['bad_signatures'] == 0 else 'MISSED'} |",
            "",
            f"Run: {figures['seconds']:.1f} s from `create_campaign` to the last event received. Messages by status "
            f"{figures['statuses']}; outbox by type {figures['kinds']}; deliveries by state {figures['deliveries']}, "
            f"by attempts {figures['attempts']}. Verdict: {'all targets met' if ok else 'targets missed'}.",
            "",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=RECIPIENTS)
    parser.add_argument("--quick", action="store_true", help="print the results only; RESULTS.md stays as it is")
    args = parser.parse_args()
    figures = run(args)
    text = report(figures, args)
    print(text)
    if not args.quick:
        write_results_section("## Delivery webhooks", text)
    return 0 if figures["lost"] == 0 and figures["duplicates"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
