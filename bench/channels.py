"""Template campaigns against subscription campaigns: each channel's delivery rate as a share of its raw client.

Issue 15 asks that subscription notifications (``bizsend``) go through the same pipeline at the same cost as
template messages: "the bench figures of template campaigns hold for subscription campaigns (same ratio to the raw
client)".  One run, so both channels share the machine's noise, on PostgreSQL + Redis with the production shape of
``bench/pipeline.py`` (2 qclusters, gunicorn 2 × 8 threads, the sandbox answering every send after 50 ms, no
receipts):

1. the raw 64-thread client sends N template messages (``bench.pipeline.raw_sends``);
2. a campaign of N template messages through ``POST /api/v1/campaigns/``, from the request to the last ``sent_at``;
3. the raw client sends N subscription notifications through ``/cgi-bin/message/subscribe/bizsend``;
4. a campaign of N subscription notifications (``channel: subscribe``) to the same followers, each holding one
   one-time credit in our ledger and at the sandbox;
5. both raw clients again.

Each campaign's rate is divided by the slower of its channel's two raw runs.  Every message must reach the sandbox
exactly once, and the subscription campaign must spend exactly N credits in the ledger.  Replaces its section of
``bench/RESULTS.md`` (``--quick`` and ``--no-results`` print only)::

    .venv/bin/python bench/channels.py            # PostgreSQL db bench_channels, Redis db 12
    .venv/bin/python bench/channels.py --quick --no-results
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import (
    CpuMeter,
    Stack,
    command_line,
    fresh_services,
    load_average,
    services_urls,
    stack_environment,
    unwind_on_sigterm,
    verdict,
    write_results_section,
)
from bench.pipeline import (
    API_THROTTLES_RAISED,
    GUNICORN_THREADS,
    GUNICORN_WORKERS,
    LATENCY_MS,
    QCLUSTERS,
    RAW_APPID,
    RAW_SECRET,
    TEMPLATE_DATA,
    RawRun,
    api_token,
    insert_followers,
    raw_sends,
    register_account,
    run_api_campaign,
    sandbox_account,
    start_sandbox,
    start_service,
)
from tests.servers import free_port

SECTION_TITLE = "## Channels: template and subscription campaigns"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_channels"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
FULL_SIZE = 20_000
QUICK_SIZE = 2_000
WARM_UP = 500
# The demo account's one-time subscription template "订单发货通知" (sandbox.demo), with values for its keywords.
SUBSCRIPTION_TEMPLATE = "sandbox-sub-order-shipped000000000000000001"
SUBSCRIPTION_DATA = {
    "character_string1": {"value": "SO20261128001"},
    "thing2": {"value": "机械键盘"},
    "time3": {"value": "2026年11月28日 10:30"},
    "phrase7": {"value": "已发货"},
}
BIZSEND = "/cgi-bin/message/subscribe/bizsend"
TEMPLATE_SEND = "/cgi-bin/message/template/send"
GRANT_THREADS = 16


def grant_credits(sandbox: str, appid: str, openids: list[str], count: int) -> None:
    """Each openid accepts the subscription template ``count`` times at the sandbox (its popup, without the event)."""

    def grant(openid: str) -> None:
        body = {"appid": appid, "openid": openid, "template_id": SUBSCRIPTION_TEMPLATE, "count": count}
        requests.post(f"{sandbox}/sandbox/subscriptions/grant", json=body, timeout=30).raise_for_status()

    with ThreadPoolExecutor(GRANT_THREADS) as pool:
        list(pool.map(grant, openids))


def record_credits(account: Any, openids: list[str]) -> None:
    """The same consent in our ledger: one one-time credit per openid, as their popup events would have left."""
    from subscriptions.models import SubscriptionConsent

    SubscriptionConsent.objects.bulk_create(
        (
            SubscriptionConsent(account=account, openid=openid, pri_tmpl_id=SUBSCRIPTION_TEMPLATE, credits=1)
            for openid in openids
        ),
        batch_size=5000,
    )


def analyze_tables() -> None:
    """Planner statistics for the rows just bulk-inserted, as autovacuum keeps them for a ledger grown by popups.

    Without them PostgreSQL takes the freshly filled ledger for empty and walks all of a template's rows for each
    write-back's credit UPDATE (18 ms instead of 1.5 ms for 50 openids among 20,000; seen in a first run).
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE accounts_follower, subscriptions_subscriptionconsent")


def credits_left(account: Any) -> int:
    from django.db.models import Sum

    from subscriptions.models import SubscriptionConsent

    rows = SubscriptionConsent.objects.filter(account=account, pri_tmpl_id=SUBSCRIPTION_TEMPLATE)
    return rows.aggregate(total=Sum("credits"))["total"] or 0


def raw_template(sandbox: str, template_id: str, count: int, run: str) -> RawRun:
    return raw_sends(
        sandbox,
        TEMPLATE_SEND,
        lambda openid, index: {
            "touser": openid,
            "template_id": template_id,
            "data": TEMPLATE_DATA,
            "client_msg_id": f"raw-{run}-{index}",
        },
        count,
    )


def raw_subscription(sandbox: str, count: int) -> RawRun:
    """bizsend takes no client_msg_id; each send spends one of the recipient's credits at the sandbox."""
    return raw_sends(
        sandbox,
        BIZSEND,
        lambda openid, index: {"touser": openid, "template_id": SUBSCRIPTION_TEMPLATE, "data": SUBSCRIPTION_DATA},
        count,
    )


def run(size: int) -> dict[str, Any]:
    from sandbox.demo import DEMO_ACCOUNT, DEMO_APPID, DEMO_SUBSCRIPTION_TEMPLATES
    from sandbox.state import seeded_openid

    figures: dict[str, Any] = {"load_start": load_average(), "started": datetime.now(UTC), "size": size}
    database_url, redis_url = services_urls(DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL)
    sandbox_port, web_port = free_port(), free_port()
    sandbox, web = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{web_port}"
    metrics_dir = tempfile.mkdtemp(prefix="wxnotify-bench-metrics-")
    env = stack_environment(database_url, redis_url, sandbox_port, metrics_dir, **API_THROTTLES_RAISED)
    figures.update(database=fresh_services(database_url, redis_url, env), redis=redis_url)
    from templates_app.services import sync_subscription_templates

    followers = size + WARM_UP
    stack = Stack(env)
    try:
        sandbox_child = start_sandbox(stack, sandbox_port, followers)
        requests.post(
            f"{sandbox}/sandbox/accounts",
            json={
                "appid": RAW_APPID,
                "secret": RAW_SECRET,
                "followers": size,
                "subscription_templates": DEMO_SUBSCRIPTION_TEMPLATES,
            },
            timeout=30,
        ).raise_for_status()
        account = register_account(DEMO_ACCOUNT)
        sync_subscription_templates(account)
        template_id = next(
            tid
            for tid in account.templates.filter(is_active=True).values_list("template_id", flat=True)
            if tid.startswith("sandbox-order-shipped")
        )
        openids = [seeded_openid(DEMO_APPID, index) for index in range(followers)]
        print(f"[{time.strftime('%X')}] {followers} followers, {size} subscription credits", flush=True)
        insert_followers(account, followers)
        record_credits(account, openids[:size])
        grant_credits(sandbox, DEMO_APPID, openids[:size], 1)
        grant_credits(sandbox, RAW_APPID, [seeded_openid(RAW_APPID, index) for index in range(size)], 2)
        analyze_tables()
        token = api_token(account)

        qclusters, gunicorn, sessions = start_service(stack, web, token)
        qcluster_groups = {child.pid for child in qclusters}
        meter = CpuMeter(
            {
                "qclusters": lambda pid, sample: sample.pgid in qcluster_groups,
                "gunicorn": lambda pid, sample: sample.pgid == gunicorn.pid,
                "sandbox": lambda pid, sample: sample.pgid == sandbox_child.pid,
                "postgres": lambda pid, sample: sample.name == "postgres",
                "redis": lambda pid, sample: sample.name == "redis-server",
            }
        )
        template_body = {
            "account": DEMO_APPID,
            "template_id": template_id,
            "data": TEMPLATE_DATA,
            "recipients": {"openids": openids[:size]},
            "name": "bench channels: template",
        }
        subscription_body = {
            "account": DEMO_APPID,
            "channel": "subscribe",
            "subscription_template_id": SUBSCRIPTION_TEMPLATE,
            "data": SUBSCRIPTION_DATA,
            "recipients": {"openids": openids[:size]},
            "name": "bench channels: subscription",
        }
        # Warm-up: connections, lazy imports, the workers' first token fetch.
        run_api_campaign(stack, sessions, web, {**template_body, "recipients": {"openids": openids[size:]}}, meter)

        run_id = secrets.token_hex(3)
        demo_before = sandbox_account(sandbox, DEMO_APPID)
        credits_before = credits_left(account)
        print(f"[{time.strftime('%X')}] raw template client: {size}", flush=True)
        figures["raw_template_before"] = raw_template(sandbox, template_id, size, f"{run_id}a")
        print(f"[{time.strftime('%X')}] template campaign: {size}", flush=True)
        figures["template"] = run_api_campaign(stack, sessions, web, template_body, meter)
        print(f"[{time.strftime('%X')}] raw bizsend client: {size}", flush=True)
        figures["raw_subscription_before"] = raw_subscription(sandbox, size)
        print(f"[{time.strftime('%X')}] subscription campaign: {size}", flush=True)
        figures["subscription"] = run_api_campaign(stack, sessions, web, subscription_body, meter)
        print(f"[{time.strftime('%X')}] both raw clients again", flush=True)
        figures["raw_template_after"] = raw_template(sandbox, template_id, size, f"{run_id}b")
        figures["raw_subscription_after"] = raw_subscription(sandbox, size)
        demo_after = sandbox_account(sandbox, DEMO_APPID)
        figures["sandbox"] = {
            name: demo_after[name] - demo_before[name] for name in ("sends", "duplicates", "subscription_sends")
        }
        figures["sandbox_errors"] = {
            code: number - demo_before["errors"].get(code, 0)
            for code, number in demo_after["errors"].items()
            if number != demo_before["errors"].get(code, 0)
        }
        figures["credits_spent"] = credits_before - credits_left(account)
        figures["load_end"] = load_average()
        return figures
    finally:
        stack.stop_all()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def report(figures: dict[str, Any], command: str) -> str:
    size = figures["size"]

    def rate(campaign: dict[str, Any]) -> float:
        return size / campaign["seconds"]

    raw_template = min(figures["raw_template_before"].rate, figures["raw_template_after"].rate)
    raw_subscription = min(figures["raw_subscription_before"].rate, figures["raw_subscription_after"].rate)
    template_ratio = rate(figures["template"]) / raw_template
    subscription_ratio = rate(figures["subscription"]) / raw_subscription
    exactly_once = (
        figures["template"]["statuses"] == {"sent": size}
        and figures["subscription"]["statuses"] == {"sent": size}
        and figures["sandbox"]["duplicates"] == 0
        and figures["sandbox"]["subscription_sends"] == size
        and figures["sandbox"]["sends"] == size
        and figures["credits_spent"] == size
    )
    started = figures["started"].strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"{SECTION_TITLE} — {started}",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, shared with other work; load average "
        f"(1/5/15 min) {figures['load_start']} at start, {figures['load_end']} at end.",
        f"Stack: PostgreSQL (database `{figures['database']}`, dropped and recreated), Redis `{figures['redis']}`; "
        f"{QCLUSTERS} qclusters, gunicorn {GUNICORN_WORKERS} × {GUNICORN_THREADS} threads, DEBUG off; the sandbox "
        f"answering every send after {LATENCY_MS} ms, no receipts. {size:,} followers, each holding one one-time "
        "credit of the demo account's subscription template in the ledger and at the sandbox.",
        "",
        "| figure | measured | target | |",
        "|---|---|---|---|",
        f"| Template campaign ÷ slower raw template run | {template_ratio:.2f} | (the reference) | |",
        f"| Subscription campaign ÷ slower raw bizsend run | {subscription_ratio:.2f} "
        f"({subscription_ratio / template_ratio:.3f} × the template ratio) | ≥ 0.9 × the template ratio | "
        f"{verdict(subscription_ratio >= 0.9 * template_ratio)} |",
        f"| Each message sent exactly once, each credit spent once | template {figures['template']['statuses']}, "
        f"subscription {figures['subscription']['statuses']}; sandbox {figures['sandbox']}, errors "
        f"{figures['sandbox_errors'] or 'none'}; ledger credits spent {figures['credits_spent']:,} | all {size:,} | "
        f"{verdict(exactly_once)} |",
        "",
        f"Delivery of {size:,} messages per channel (50 ms per send):",
        "",
        "| sender | seconds | messages/s | errcodes |",
        "|---|---:|---:|---|",
    ]
    for name, key in (
        ("raw client, template send (before)", "raw_template_before"),
        ("raw client, template send (after)", "raw_template_after"),
        ("raw client, bizsend (before)", "raw_subscription_before"),
        ("raw client, bizsend (after)", "raw_subscription_after"),
    ):
        raw = figures[key]
        lines.append(f"| {name} | {raw.seconds:.1f} | {raw.rate:.0f} | {raw.errcodes} |")
    for name, key in (("template campaign via API", "template"), ("subscription campaign via API", "subscription")):
        campaign = figures[key]
        lines.append(
            f"| {name} (accepted in {campaign['accept_seconds']:.2f} s) | {campaign['seconds']:.1f} | "
            f"{rate(campaign):.0f} | — |"
        )
    lines += [
        "",
        "CPU milliseconds per message, by process (from /proc; postgres and redis counted host-wide):",
        "",
        "| campaign | qclusters | gunicorn | sandbox | postgres | redis | total |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, key in (("template", "template"), ("subscription", "subscription")):
        used = figures[key]["cpu"]
        cells = [
            used.get(part, 0.0) * 1000 / size for part in ("qclusters", "gunicorn", "sandbox", "postgres", "redis")
        ]
        lines.append(f"| {name} | " + " | ".join(f"{cell:.2f}" for cell in cells) + f" | {sum(cells):.2f} |")
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SIZE:,} per channel instead of {FULL_SIZE:,}")
    parser.add_argument("--no-results", action="store_true", help="print only, do not write bench/RESULTS.md")
    args = parser.parse_args()
    command = command_line()
    unwind_on_sigterm()
    figures = run(QUICK_SIZE if args.quick else FULL_SIZE)
    text = report(figures, command)
    print(text)
    if not (args.quick or args.no_results):
        write_results_section(SECTION_TITLE, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
