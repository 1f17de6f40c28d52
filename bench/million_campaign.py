"""A campaign to every one of 1,000,000 subscribed followers (issue 12, "The million"): how long its acceptance
takes and how much memory, then how fast its first 100,000 messages go out against a raw client of the same run.

Runs on PostgreSQL and Redis with the WeChat sandbox in its own process (50 ms per send, no receipts).  The
followers are written with one ``INSERT … SELECT generate_series`` (openids ``o`` + 27 digits) and
``VACUUM ANALYZE``; the sandbox is told the same openids.  Then, in one run:

1. the raw client (``bench.pipeline.raw_baseline``: 64 threads, keep-alive sessions) sends ``--raw`` messages to
   a second sandbox account;
2. with ``--before REV``, the code of commit REV (exported with ``git archive``) accepts the campaign in a child
   process while no worker runs; its messages are then deleted;
3. two ``qcluster`` processes of this tree start, and this tree accepts the campaign through ``create_campaign``
   in a fresh child process (wall time and peak resident set, ``VmHWM``): delivery starts after its commit;
4. the campaign's first ``--first`` messages to go out are awaited: the rate from the end of the acceptance to
   the ``sent_at`` of the last of them, against the raw client's;
5. the workers stop and the raw client runs again.

The benchmark owns its database (dropped and recreated: its name must start with ``bench``) and flushes its
Redis database.  All traffic stays on 127.0.0.1.  Appends or replaces its section of ``bench/RESULTS.md``
(``--no-results`` prints only)::

    .venv/bin/python bench/million_campaign.py --before a92d324     # PostgreSQL bench_million_campaign, Redis db 13
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import (
    BASE_DIR,
    CpuMeter,
    Stack,
    command_line,
    export_commit,
    fresh_services,
    load_average,
    port_is_open,
    services_urls,
    stack_environment,
    this_tree,
    unwind_on_sigterm,
    verdict,
    write_results_section,
)
from bench.pipeline import (
    LATENCY_MS,
    QCLUSTERS,
    RAW_APPID,
    RAW_SECRET,
    RAW_THREADS,
    TEMPLATE_DATA,
    RawRun,
    raw_baseline,
    register_account,
    sandbox_account,
    sandbox_delta,
)
from tests.servers import free_port

SECTION_TITLE = "## The million: a campaign to 1,000,000 followers"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_million_campaign"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
TARGET_ACCEPT_SECONDS = 30.0
TARGET_PEAK_MB = 300
OPENID_SQL = "'o' || lpad(i::text, 27, '0')"


def openid(index: int) -> str:
    """The openid ``OPENID_SQL`` gives follower ``index`` (1-based)."""
    return "o" + str(index).rjust(27, "0")


# --- Child process: one acceptance ----------------------------------------------------------------------------------


def peak_kib() -> int:
    """This process's peak resident set (``VmHWM``): unlike ``ru_maxrss``, it does not carry the peak of the parent
    this process was forked from."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def child_accept(project: str, appid: str, template_id: str) -> None:
    """Accept a campaign to every subscribed follower with the project found in ``project``; print JSON."""
    sys.path.insert(0, project)
    import django

    django.setup()
    from accounts.models import OfficialAccount
    from messaging.services import RecipientSpec, create_campaign

    account = OfficialAccount.objects.get(appid=appid)
    before = resource.getrusage(resource.RUSAGE_SELF)
    baseline_kib = peak_kib()
    started = time.perf_counter()
    campaign = create_campaign(
        account=account,
        template_id=template_id,
        data=TEMPLATE_DATA,
        recipients=RecipientSpec.all_subscribed(),
        name="bench: all subscribed",
    )
    seconds = time.perf_counter() - started
    used = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "campaign": campaign.pk,
                "seconds": seconds,
                "cpu_seconds": used.ru_utime + used.ru_stime - before.ru_utime - before.ru_stime,
                "recipients": campaign.recipient_count,
                "baseline_kib": baseline_kib,
                "peak_kib": peak_kib(),
                "finished_at": time.time(),
            }
        ),
        flush=True,
    )


def accept(env: dict[str, str], project: Path, template_id: str) -> dict[str, Any]:
    from sandbox.demo import DEMO_APPID

    output = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(project), DEMO_APPID, template_id],
        env=env,
        cwd=project,
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


# --- Parent ---------------------------------------------------------------------------------------------------------


def fill_followers(account_id: int, count: int) -> float:
    """``count`` subscribed followers in one statement, then what autovacuum would do; returns the seconds."""
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO accounts_follower (account_id, openid, unionid, user_id, subscribed, subscribed_at, "  # noqa: S608
            "unsubscribed_at, source, remark, subscribe_scene, qr_scene_str, last_interaction_at, synced_at, "
            f"created_at, updated_at) SELECT %s, {OPENID_SQL}, '', NULL, true, now() - i * interval '1 second', "
            "NULL, 'sync', '', 'ADD_SCENE_SEARCH', '', NULL, now(), now(), now() "
            "FROM generate_series(1, %s) AS i",
            [account_id, count],
        )
        cursor.execute("VACUUM ANALYZE accounts_follower")
    return time.perf_counter() - started


def forget_campaigns() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE messaging_message, messaging_campaign CASCADE")
        cursor.execute("VACUUM ANALYZE messaging_message")


def sent_count(campaign_id: int) -> int:
    from messaging.models import Message

    return Message.objects.filter(campaign_id=campaign_id, sent_at__isnull=False).count()


def nth_sent_at(campaign_id: int, nth: int) -> float:
    """When the campaign's ``nth`` message to go out was sent."""
    from messaging.models import Message

    sent = Message.objects.filter(campaign_id=campaign_id, sent_at__isnull=False).order_by("sent_at")
    return sent.values_list("sent_at", flat=True)[nth - 1].timestamp()


def wait_sent(
    stack: Stack, campaign_id: int, nth: int, timeout: float, sandbox: str, before_sandbox: dict[str, Any]
) -> float | None:
    """Wait until ``nth`` messages of the campaign are sent; return when its expansion was seen done, if it was.

    Progress is read from the sandbox's counter of deliveries, which costs the database nothing; the database is
    counted only once the sandbox has seen ``nth`` deliveries (the ``sent`` rows follow within a write-back).
    Counting the campaign's sent rows every second, as this benchmark did until 2026-12-07, read every message of
    the campaign each time (2.1 s per count with 1,000,000 messages) and so competed with the delivery it timed.
    """
    from messaging.models import Campaign
    from sandbox.demo import DEMO_APPID

    deadline = time.monotonic() + timeout
    expanded_at = None
    while True:
        stack.check_alive()
        if expanded_at is None and Campaign.objects.get(pk=campaign_id).state != Campaign.State.EXPANDING:
            expanded_at = time.time()
        delivered = sandbox_account(sandbox, DEMO_APPID)["delivered"] - before_sandbox["delivered"]
        if delivered >= nth and sent_count(campaign_id) >= nth:
            return expanded_at
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sent_count(campaign_id)} of {nth} messages sent after {timeout:.0f} s")
        time.sleep(1.0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sandbox.demo import DEMO_ACCOUNT, DEMO_APPID

    figures: dict[str, Any] = {"load_start": load_average(), "started": datetime.now(UTC), "args": vars(args)}
    database_url, redis_url = services_urls(DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL)
    sandbox_port = free_port()
    sandbox = f"http://127.0.0.1:{sandbox_port}"
    scratch = Path(tempfile.mkdtemp(prefix="wxnotify-bench-million-"))
    metrics_dir = scratch / "metrics"
    metrics_dir.mkdir()
    env = stack_environment(database_url, redis_url, sandbox_port, str(metrics_dir))
    stack = Stack(env)
    try:
        figures.update(database=fresh_services(database_url, redis_url, env), redis=redis_url)
        before_dir = None
        if args.before:
            before_dir = scratch / "before"
            before_dir.mkdir()
            figures["before"] = export_commit(args.before, before_dir)
        figures["after"] = this_tree()

        sandbox_child = stack.manage(
            "sandbox",
            "wechat_sandbox",
            f"--port={sandbox_port}",
            "--followers=0",
            f"--latency-ms={LATENCY_MS}",
            "--no-receipts",
        )
        stack.wait_for("the sandbox", lambda: port_is_open(sandbox_port))
        account = register_account(DEMO_ACCOUNT)
        template_id = account.templates.filter(is_active=True).order_by("pk").values_list("template_id", flat=True)
        template_id = next(tid for tid in template_id if tid.startswith("sandbox-order-shipped"))
        print(f"[{time.strftime('%X')}] {args.followers:,} followers", flush=True)
        figures["fill_seconds"] = fill_followers(account.pk, args.followers)
        requests.post(
            f"{sandbox}/sandbox/accounts",
            json={"appid": DEMO_APPID, "followers": [openid(i) for i in range(1, args.followers + 1)]},
            timeout=300,
        ).raise_for_status()
        requests.post(
            f"{sandbox}/sandbox/accounts",
            json={"appid": RAW_APPID, "secret": RAW_SECRET, "followers": args.raw},
            timeout=60,
        ).raise_for_status()

        print(f"[{time.strftime('%X')}] raw client, {args.raw:,} sends", flush=True)
        figures["raw_before"] = raw_baseline(sandbox, template_id, args.raw, "before")

        if before_dir is not None:
            print(f"[{time.strftime('%X')}] {figures['before']}: accepting, no workers", flush=True)
            figures["accept_before"] = accept(env, before_dir, template_id)
            forget_campaigns()

        qclusters = [stack.manage(f"qcluster {n + 1}", "qcluster") for n in range(QCLUSTERS)]
        qcluster_groups = {child.pid for child in qclusters}
        meter = CpuMeter(
            {
                "qclusters": lambda pid, sample: sample.pgid in qcluster_groups,
                "sandbox": lambda pid, sample: sample.pgid == sandbox_child.pid,
                "postgres": lambda pid, sample: sample.name == "postgres",
                "redis": lambda pid, sample: sample.name == "redis-server",
            }
        )
        time.sleep(3)  # the clusters' workers up and waiting
        before_sandbox = sandbox_account(sandbox, DEMO_APPID)
        print(f"[{time.strftime('%X')}] {figures['after']}: accepting, {QCLUSTERS} qclusters running", flush=True)
        meter.start()
        figures["accept_after"] = accepted = accept(env, BASE_DIR, template_id)
        figures["accept_cpu"] = meter.stop()
        print(f"    {accepted}", flush=True)
        meter.start()
        expanded_at = wait_sent(stack, accepted["campaign"], args.first, 1800, sandbox, before_sandbox)
        figures["expanded_seconds"] = None if expanded_at is None else expanded_at - accepted["finished_at"]
        figures["delivery_cpu"] = meter.stop()
        figures["first_seconds"] = nth_sent_at(accepted["campaign"], args.first) - accepted["finished_at"]
        for child in qclusters:
            stack.stop(child)
        figures.update(sandbox_delta(before_sandbox, sandbox_account(sandbox, DEMO_APPID)))
        from django.db.models import Count

        from messaging.models import Message

        figures["statuses"] = dict(
            Message.objects.filter(campaign_id=accepted["campaign"], sent_at__isnull=False)
            .values_list("status")
            .annotate(n=Count("id"))
            .order_by()
        )
        print(f"[{time.strftime('%X')}] raw client again", flush=True)
        figures["raw_after"] = raw_baseline(sandbox, template_id, args.raw, "after")
        figures["load_end"] = load_average()
        figures["cpus"] = os.cpu_count()
        return figures
    finally:
        stack.stop_all()
        shutil.rmtree(scratch, ignore_errors=True)


# --- Report ---------------------------------------------------------------------------------------------------------


def accept_cells(accepted: dict[str, Any]) -> str:
    return (
        f"{accepted['seconds']:.1f} s (CPU {accepted['cpu_seconds']:.1f} s), "
        f"peak RSS {accepted['peak_kib'] / 1024:.0f} MB "
        f"(after `django.setup()`: {accepted['baseline_kib'] / 1024:.0f} MB), "
        f"{accepted['recipients']:,} recipients"
    )


def report(figures: dict[str, Any], command: str) -> str:
    args = figures["args"]
    accepted = figures["accept_after"]
    raws: list[RawRun] = [figures["raw_before"], figures["raw_after"]]
    raw_rate = min(raw.rate for raw in raws)
    first_rate = args["first"] / figures["first_seconds"]
    peak_mb = accepted["peak_kib"] / 1024
    sandbox = figures["sandbox"]
    rows = [
        (
            f"{args['followers']:,} subscribed followers: acceptance (`create_campaign`, all subscribed)",
            f"{accepted['seconds']:.1f} s",
            f"≤ {TARGET_ACCEPT_SECONDS:.0f} s",
            verdict(accepted["seconds"] <= TARGET_ACCEPT_SECONDS),
        ),
        (
            "… peak RSS of the accepting process (`VmHWM`)",
            f"{peak_mb:.0f} MB",
            f"< {TARGET_PEAK_MB} MB",
            verdict(peak_mb < TARGET_PEAK_MB),
        ),
        (
            f"First {args['first']:,} messages sent: end of acceptance → {args['first']:,}th `sent_at`",
            f"{figures['first_seconds']:.1f} s = {first_rate:.0f}/s",
            f"≥ raw client ({raw_rate:.0f}/s, the slower of its two runs)",
            verdict(first_rate >= raw_rate),
        ),
        (
            "Sent by the end (sandbox): sends / delivered / duplicates, errors",
            f"{sandbox['sends']:,} / {sandbox['delivered']:,} / {sandbox['duplicates']}, "
            f"{figures['sandbox_errors'] or 'none'}",
            "no duplicate, no error",
            verdict(not sandbox["duplicates"] and not figures["sandbox_errors"]),
        ),
    ]
    lines = [
        f"{SECTION_TITLE} — {figures['started']:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {figures['cpus']} CPUs, Python {platform.python_version()}, shared with other work; "
        f"load average (1/5/15 min) {figures['load_start']} at start, {figures['load_end']} at end.",
        f"Stack: PostgreSQL (database `{figures['database']}`, dropped and recreated), Redis `{figures['redis']}` "
        f"(cache, token lock, django-q2 broker; flushed), DEBUG off; {QCLUSTERS} `qcluster` processes with the "
        f"default settings; WeChat sandbox (own process) answering every send after {LATENCY_MS} ms, no receipts. "
        f"{args['followers']:,} subscribed followers written with `INSERT … SELECT generate_series` and "
        f"`VACUUM ANALYZE` in {figures['fill_seconds']:.0f} s.",
        "",
        "| figure | measured | target | |",
        "|---|---|---|---|",
        *(f"| {name} | {value} | {target} | {result} |" for name, value, target, result in rows),
        "",
        "Acceptance of the campaign (a fresh process each; `before` with no worker running):",
        "",
    ]
    if "accept_before" in figures:
        lines.append(f"- `{figures['before']}`: {accept_cells(figures['accept_before'])}")
    lines += [
        f"- `{figures['after']}`: {accept_cells(accepted)}",
        "",
        f"Raw client ({RAW_THREADS} threads, {args['raw']:,} sends): "
        + ", ".join(f"{raw.seconds:.1f} s = {raw.rate:.0f}/s, errcodes {raw.errcodes}" for raw in raws)
        + f" (before, after). Messages of the campaign sent when the workers stopped: {figures['statuses']}. "
        + (
            "Its expansion was still running then."
            if figures["expanded_seconds"] is None
            else f"Its messages were all written {figures['expanded_seconds']:.0f} s after the acceptance "
            "(seen within 1 s)."
        ),
        "",
        "CPU seconds by process (from /proc; postgres and redis host-wide): acceptance "
        + ", ".join(f"{name} {value:.1f}" for name, value in figures["accept_cpu"].items())
        + f"; first {args['first']:,} sent "
        + ", ".join(f"{name} {value:.1f}" for name, value in figures["delivery_cpu"].items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--followers", type=int, default=1_000_000, help="subscribed followers (1,000,000)")
    parser.add_argument("--first", type=int, default=100_000, help="messages whose delivery is timed (100,000)")
    parser.add_argument("--raw", type=int, default=20_000, help="sends of each raw-client run (20,000)")
    parser.add_argument("--before", help="also accept the campaign with the code of this commit, before this tree")
    parser.add_argument("--no-results", action="store_true", help="print only, do not write bench/RESULTS.md")
    parser.add_argument("--child", nargs=3, metavar=("PROJECT", "APPID", "TEMPLATE_ID"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_accept(*args.child)
        return 0
    command = command_line()
    unwind_on_sigterm()
    figures = run(args)
    text = report(figures, command)
    print(text)
    if not args.no_results:
        write_results_section(SECTION_TITLE, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
