"""Single sends while a big campaign drains (issue 14, "Lanes"): accept→sent latency of single messages with no
campaign running and while a 100,000-recipient campaign drains, and the campaign's own rate meanwhile.

Runs the deployed shape on PostgreSQL and Redis: gunicorn, two ``qcluster`` processes with the default settings
(deploy/systemd), and the WeChat sandbox in its own process answering every send after 50 ms, no receipts.  The
followers are written with one ``INSERT … SELECT generate_series`` (as bench/million_campaign.py does) and the
sandbox is told the same openids.  For each version of the code (with ``--baseline-rev REV``: commit REV, exported
with ``git archive``, then this tree; the web and worker processes run the version's code, the benchmark and the
sandbox this tree's):

1. warm-up: a few single sends, until they are sent;
2. **no campaign**: ``--rate`` single sends a second for ``--seconds`` through ``POST /api/v1/messages/``, open
   loop (each request sent at its scheduled instant whatever the earlier ones are doing), each to a follower of its
   own; wait until they are all sent;
3. **campaign draining**: a campaign to ``--campaign`` followers (an openid list, accepted through
   ``create_campaign`` in this process; its delivery starts at the commit); once its first message is sent, the same
   singles as in 2, then wait for them.  The campaign must still have queued messages when the last single is sent,
   or the phase did not measure what it claims (the report says so).

Figures per phase: the singles' accept→sent latency (``sent_at − created_at`` of their rows) p50/p90/p99/max, and
the campaign's messages sent per second over the phase's window (first scheduled single → last single sent), so a
lane that starves the campaign shows too.  Between versions the messages and campaigns are truncated and the Redis
database flushed; the sandbox counts sends, so duplicates show per version.

The benchmark owns its database (dropped and recreated: its name must start with ``bench``) and flushes its Redis
database.  All traffic stays on 127.0.0.1.  Appends or replaces its section of ``bench/RESULTS.md``
(``--no-results`` prints only)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_lanes REDIS_URL=redis://127.0.0.1:6379/14 \\
        .venv/bin/python bench/lanes.py --baseline-rev REV
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import (
    BASE_DIR,
    Stack,
    command_line,
    export_commit,
    flush_redis,
    fresh_services,
    load_average,
    port_is_open,
    services_urls,
    stack_environment,
    this_tree,
    unwind_on_sigterm,
    write_results_section,
)
from bench.million_campaign import fill_followers, openid
from bench.pipeline import (
    API_THROTTLES_RAISED,
    GUNICORN_THREADS,
    GUNICORN_WORKERS,
    LATENCY_MS,
    QCLUSTERS,
    TEMPLATE_DATA,
    Latencies,
    ThreadSessions,
    api_token,
    message_body,
    open_loop,
    register_account,
    sandbox_account,
    sandbox_delta,
    start_service,
)
from tests.servers import free_port

SECTION_TITLE = "## Lanes: single sends while a 100,000-recipient campaign drains"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_lanes"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
TARGET_P99_SECONDS = 2.0
WARM_UP_SINGLES = 20


@dataclass
class Phase:
    """One phase of one version: the singles' latencies and the campaign's progress over the phase's window."""

    name: str
    accept: Latencies
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    window_s: float = 0.0
    campaign_sent: int = 0
    campaign_left: int | None = None

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    @property
    def campaign_rate(self) -> float:
        return self.campaign_sent / self.window_s if self.window_s else 0.0


@dataclass
class Version:
    label: str
    project: Path
    phases: list[Phase] = field(default_factory=list)
    sandbox: dict[str, Any] = field(default_factory=dict)
    load: str = ""


# --- Measurements -------------------------------------------------------------------------------------------------


def singles_of(prefix: str) -> Any:
    from messaging.models import Message

    return Message.objects.filter(campaign__isnull=True, client_msg_id__startswith=prefix)


def wait_singles_sent(stack: Stack, prefix: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while singles_of(prefix).filter(status__in=("queued", "sending")).exists() or singles_of(prefix).count() < count:
        stack.check_alive()
        if time.monotonic() > deadline:
            left = singles_of(prefix).filter(status__in=("queued", "sending")).count()
            raise RuntimeError(f"{left} single message(s) still unfinished after {timeout:.0f} s")
        time.sleep(0.2)


def campaign_sent(campaign_id: int, until: datetime | None = None) -> int:
    from messaging.models import Message

    sent = Message.objects.filter(campaign_id=campaign_id, sent_at__isnull=False)
    return sent.filter(sent_at__lte=until).count() if until else sent.count()


def measure_singles(
    stack: Stack,
    name: str,
    url: str,
    sessions: ThreadSessions,
    bodies: list[bytes],
    prefix: str,
    rate: float,
    campaign_id: int | None,
) -> Phase:
    from django.db.models import Count, Max

    from messaging.models import Message

    started = datetime.now(UTC)
    print(f"[{time.strftime('%X')}] {name}: {len(bodies)} singles at {rate}/s", flush=True)
    phase = Phase(name, open_loop(url, sessions, bodies, rate))
    wait_singles_sent(stack, prefix, len(phase.accept.ok_ms), timeout=600)
    singles = singles_of(prefix)
    phase.statuses = dict(singles.values_list("status").annotate(n=Count("id")).order_by())
    phase.latencies_s = [
        (sent_at - created_at).total_seconds()
        for created_at, sent_at in singles.filter(sent_at__isnull=False).values_list("created_at", "sent_at")
    ]
    ended = singles.aggregate(last=Max("sent_at"))["last"]
    phase.window_s = (ended - started).total_seconds()
    if campaign_id is not None:
        phase.campaign_sent = campaign_sent(campaign_id, ended) - campaign_sent(campaign_id, started)
        phase.campaign_left = Message.objects.filter(campaign_id=campaign_id, sent_at__isnull=True).count()
    return phase


# --- One version ----------------------------------------------------------------------------------------------------


def forget_messages() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE messaging_message, messaging_campaign CASCADE")
        cursor.execute("VACUUM ANALYZE messaging_message")


def run_version(
    version: Version,
    stack: Stack,
    args: argparse.Namespace,
    sandbox: str,
    redis_url: str,
    template_id: str,
    token: str,
) -> None:
    from accounts.models import OfficialAccount
    from messaging.services import RecipientSpec, create_campaign
    from sandbox.demo import DEMO_APPID

    forget_messages()
    flush_redis(redis_url)
    web = f"http://127.0.0.1:{free_port()}"
    workers, gunicorn, sessions = start_service(stack, web, token, project=version.project)
    try:
        run_id = secrets.token_hex(3)
        url = f"{web}/api/v1/messages/"
        first_single = args.campaign + 1
        count = int(args.rate * args.seconds)

        def bodies(phase: str, offset: int, number: int) -> list[bytes]:
            return [
                json.dumps(
                    message_body(DEMO_APPID, template_id, openid(first_single + offset + i), f"l-{run_id}-{phase}-{i}")
                ).encode()
                for i in range(number)
            ]

        before = sandbox_account(sandbox, DEMO_APPID)
        time.sleep(3)  # the clusters' workers up and waiting
        open_loop(url, sessions, bodies("w", 0, WARM_UP_SINGLES), 10)
        wait_singles_sent(stack, f"l-{run_id}-w-", WARM_UP_SINGLES, timeout=120)

        version.phases.append(
            measure_singles(
                stack, "no campaign", url, sessions, bodies("a", 0, count), f"l-{run_id}-a-", args.rate, None
            )
        )

        print(f"[{time.strftime('%X')}] accepting a campaign to {args.campaign:,} followers", flush=True)
        account = OfficialAccount.objects.get(appid=DEMO_APPID)
        campaign = create_campaign(
            account=account,
            template_id=template_id,
            data=TEMPLATE_DATA,
            recipients=RecipientSpec.openids(openid(i) for i in range(1, args.campaign + 1)),
            name="bench: lanes",
        )
        deadline = time.monotonic() + 120
        while not campaign_sent(campaign.pk):
            stack.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("the campaign's first message was not sent within 120 s")
            time.sleep(0.2)
        version.phases.append(
            measure_singles(
                stack,
                "campaign draining",
                url,
                sessions,
                bodies("b", count, count),
                f"l-{run_id}-b-",
                args.rate,
                campaign.pk,
            )
        )
        version.load = load_average()
        for child in [gunicorn, *workers]:
            stack.stop(child)
        version.sandbox = sandbox_delta(before, sandbox_account(sandbox, DEMO_APPID))
    finally:
        for child in [gunicorn, *workers]:
            if child in stack.children:
                stack.stop(child)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sandbox.demo import DEMO_ACCOUNT, DEMO_APPID

    figures: dict[str, Any] = {"load_start": load_average(), "started": datetime.now(UTC), "args": vars(args)}
    database_url, redis_url = services_urls(DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL)
    sandbox_port = free_port()
    sandbox = f"http://127.0.0.1:{sandbox_port}"
    scratch = Path(tempfile.mkdtemp(prefix="wxnotify-bench-lanes-"))
    metrics_dir = scratch / "metrics"
    metrics_dir.mkdir()
    env = stack_environment(database_url, redis_url, sandbox_port, str(metrics_dir), **API_THROTTLES_RAISED)
    stack = Stack(env)
    try:
        figures.update(database=fresh_services(database_url, redis_url, env), redis=redis_url)
        versions = []
        if args.baseline_rev:
            before_dir = scratch / "before"
            before_dir.mkdir()
            versions.append(Version(f"`{export_commit(args.baseline_rev, before_dir)}` (before)", before_dir))
        versions.append(Version(f"`{this_tree()}`", BASE_DIR))

        stack.manage(
            "sandbox",
            "wechat_sandbox",
            f"--port={sandbox_port}",
            "--followers=0",
            f"--latency-ms={LATENCY_MS}",
            "--no-receipts",
        )
        stack.wait_for("the sandbox", lambda: port_is_open(sandbox_port))
        account = register_account(DEMO_ACCOUNT)
        if args.rate_limit:
            account.send_rate_limit = args.rate_limit
            account.save(update_fields=["send_rate_limit"])
        template_ids = account.templates.filter(is_active=True).order_by("pk").values_list("template_id", flat=True)
        template_id = next(tid for tid in template_ids if tid.startswith("sandbox-order-shipped"))
        followers = args.campaign + 2 * int(args.rate * args.seconds) + WARM_UP_SINGLES
        print(f"[{time.strftime('%X')}] {followers:,} followers", flush=True)
        figures["fill_seconds"] = fill_followers(account.pk, followers)
        requests.post(
            f"{sandbox}/sandbox/accounts",
            json={"appid": DEMO_APPID, "followers": [openid(i) for i in range(1, followers + 1)]},
            timeout=300,
        ).raise_for_status()
        token = api_token(account)
        for version in versions:
            print(f"[{time.strftime('%X')}] version {version.label}", flush=True)
            run_version(version, stack, args, sandbox, redis_url, template_id, token)
        figures["versions"] = versions
        figures["load_end"] = load_average()
        figures["cpus"] = os.cpu_count()
        return figures
    finally:
        stack.stop_all()
        shutil.rmtree(scratch, ignore_errors=True)


# --- Report ---------------------------------------------------------------------------------------------------------


def phase_row(version: Version, phase: Phase) -> str:
    if not phase.latencies_s:
        return f"| {version.label} | {phase.name} | none sent | | | | | |"
    singles = f"{len(phase.latencies_s)} sent" + (
        f", accept errors {phase.accept.errors}" if phase.accept.errors else ""
    )
    if set(phase.statuses) - {"sent"}:
        singles += f", statuses {phase.statuses}"
    campaign = "—"
    if phase.campaign_left is not None:
        campaign = f"{phase.campaign_rate:.0f}/s ({phase.campaign_sent:,} in {phase.window_s:.0f} s; "
        campaign += f"{phase.campaign_left:,} still queued at the end)"
    p99 = phase.percentile(0.99)
    return (
        f"| {version.label} | {phase.name} | {singles} | {statistics.median(phase.latencies_s):.2f} s | "
        f"{phase.percentile(0.90):.2f} s | **{p99:.2f} s** {'met' if p99 <= TARGET_P99_SECONDS else 'MISSED'} | "
        f"{max(phase.latencies_s):.2f} s | {campaign} |"
    )


def report(figures: dict[str, Any], command: str) -> str:
    args = figures["args"]
    versions: list[Version] = figures["versions"]
    limit = f"a send rate limit of {args['rate_limit']}/s" if args["rate_limit"] else "no send rate limit"
    lines = [
        f"{SECTION_TITLE} — {figures['started']:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {figures['cpus']} CPUs, Python {platform.python_version()}, shared with other work; "
        f"load average (1/5/15 min) {figures['load_start']} at start, {figures['load_end']} at end"
        + "".join(f"; {version.load} after {version.label}" for version in versions)
        + ".",
        f"Stack: PostgreSQL (database `{figures['database']}`, dropped and recreated), Redis `{figures['redis']}` "
        f"(cache, django-q2 broker; flushed before each version), DEBUG off; gunicorn {GUNICORN_WORKERS}×"
        f"{GUNICORN_THREADS} and {QCLUSTERS} `qcluster` processes with the default settings, running the version's "
        f"code; WeChat sandbox (own process) answering every send after {LATENCY_MS} ms, no receipts; one account "
        f"with {limit}. Singles: {args['rate']}/s for {args['seconds']:.0f} s through `POST /api/v1/messages/`, "
        f"open loop, each to a follower of its own; campaign: {args['campaign']:,} openids accepted with "
        "`create_campaign`, the singles starting once its first message was sent.",
        "",
        "Latency is `sent_at − created_at` of the singles' rows; the campaign's rate is its messages sent between the "
        "first scheduled single and the last single's `sent_at`.",
        "",
        f"| code | phase | singles | p50 | p90 | p99 (target ≤ {TARGET_P99_SECONDS:.0f} s) | max | campaign sent |",
        "|---|---|---|---|---|---|---|---|",
        *(phase_row(version, phase) for version in versions for phase in version.phases),
        "",
        "Sandbox, per version (sends / delivered / duplicates, errors): "
        + "; ".join(
            f"{version.label} {version.sandbox['sandbox']['sends']:,} / {version.sandbox['sandbox']['delivered']:,} / "
            f"{version.sandbox['sandbox']['duplicates']}, {version.sandbox['sandbox_errors'] or 'none'}"
            for version in versions
            if version.sandbox
        )
        + ".",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--campaign", type=int, default=100_000, help="recipients of the campaign (100,000)")
    parser.add_argument("--rate", type=float, default=5.0, help="single sends a second (5)")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of singles per phase (60)")
    parser.add_argument("--rate-limit", type=int, default=0, help="the account's send rate limit (0: none)")
    parser.add_argument("--baseline-rev", help="also run the web and workers with the code of this commit, first")
    parser.add_argument("--no-results", action="store_true", help="print only, do not write bench/RESULTS.md")
    args = parser.parse_args()
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
