"""Scheduled sends benchmark: how close to its time a scheduled message is claimed (target: within ±5 s).

Runs the real stack of ``bench/dispatch.py`` (the WeChat sandbox at 50 ms per send, ``qcluster`` workers, the API
under gunicorn) on either configuration:

- ``--config embedded``: SQLite, the database cache and the django-q2 ORM broker, in a temporary directory; one
  qcluster.
- ``--config services``: PostgreSQL (database ``bench_schedule``, dropped and recreated) and Redis (db 0,
  flushed); two qclusters.

Everything is accepted at the start (t0), then the run waits for it:

1. *Singles within the horizon*: single messages through the API, their send_at spread from t0 + 40 s over 50 s
   (inside ``WXNOTIFY_RETRY_WAIT_HORIZON_SECONDS``, so the acceptance itself makes a task wait for them).
2. *A scheduled campaign*: one campaign through the API with send_at t0 + 60 s.
3. *Singles beyond the horizon*: send_at from t0 + 200 s: nothing waits for them at acceptance; the every-minute
   sweep starts the waiting task once they come within the horizon.
4. *Quiet hours*: the account's quiet window is set to end at t0 + 25 s, then a campaign is accepted: its messages
   wait as scheduled and are claimed when the window ends.

For each it reports how late each message was claimed after its time (``attempted_at`` minus send_at, or minus
the end of the quiet window) and sent (``sent_at`` minus the same), and how many were claimed early (must be 0).
Results replace this benchmark's section of ``bench/RESULTS.md`` for the configuration run::

    .venv/bin/python bench/scheduled.py --config embedded
    .venv/bin/python bench/scheduled.py --config services
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import load_average, write_results_section
from bench.dispatch import FOLLOWERS, LATENCY_MS, api_stack, summary
from bench.pipeline import TEMPLATE_DATA

SERVICES_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_schedule"
SERVICES_REDIS_URL = "redis://127.0.0.1:6379/0"


def openid(index: int) -> str:
    from sandbox.demo import DEMO_APPID
    from sandbox.state import seeded_openid

    return seeded_openid(DEMO_APPID, index % FOLLOWERS)


def post(stack: Any, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = stack.sessions.get().post(url, data=json.dumps(body).encode(), timeout=60)
    if response.status_code != 202:
        raise SystemExit(f"{url} answered {response.status_code}: {response.text[:500]}")
    return response.json()


def schedule_singles(stack: Any, start: datetime, count: int, spread: float, offset: int) -> list[int]:
    from sandbox.demo import DEMO_APPID

    ids = []
    for index in range(count):
        send_at = start + timedelta(seconds=spread * index / max(1, count - 1))
        body = {
            "account": DEMO_APPID,
            "touser": openid(offset + index),
            "template_id": stack.template_id,
            "data": TEMPLATE_DATA,
            "send_at": send_at.isoformat(),
        }
        ids.append(post(stack, stack.url, body)["id"])
    return ids


def campaign(stack: Any, recipients: range, send_at: datetime | None) -> int:
    from sandbox.demo import DEMO_APPID

    body: dict[str, Any] = {
        "account": DEMO_APPID,
        "template_id": stack.template_id,
        "data": TEMPLATE_DATA,
        "recipients": {"openids": [openid(index) for index in recipients]},
    }
    if send_at is not None:
        body["send_at"] = send_at.isoformat()
    return post(stack, stack.url.replace("/messages/", "/campaigns/"), body)["id"]


def quiet_until(end: datetime) -> None:
    """Give the demo account a quiet window from an hour ago until ``end`` (its seconds included)."""
    from accounts.models import OfficialAccount
    from sandbox.demo import DEMO_APPID

    account = OfficialAccount.objects.get(appid=DEMO_APPID)
    local_end = end.astimezone(account.zone)
    OfficialAccount.objects.filter(pk=account.pk).update(
        quiet_start=(local_end - timedelta(hours=1)).time(), quiet_end=local_end.time()
    )


def measure(rows: Any, due_of: Any) -> dict[str, Any]:
    from messaging.models import Message

    claimed, sent, early, statuses = [], [], 0, {}
    for row in rows.values("status", "attempted_at", "sent_at", "send_at", "campaign_id"):
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
        due = due_of(row)
        if row["attempted_at"] is not None:
            lateness = (row["attempted_at"] - due).total_seconds()
            claimed.append(lateness)
            early += lateness < 0
        if row["sent_at"] is not None:
            sent.append((row["sent_at"] - due).total_seconds())
    waiting = statuses.get(Message.Status.SCHEDULED, 0) + statuses.get(Message.Status.QUEUED, 0)
    return {"claimed": claimed, "sent": sent, "early": early, "statuses": statuses, "waiting": waiting}


def run(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {"config": args.config, "load_start": load_average(), "started": datetime.now(UTC)}
    with api_stack(args.config, database_url=SERVICES_DATABASE_URL, redis_url=SERVICES_REDIS_URL) as stack:
        from django.db.models import Q

        from messaging.models import Message

        t0 = datetime.now(UTC)
        quiet_end = t0 + timedelta(seconds=25)
        quiet_until(quiet_end)
        quiet_campaign = campaign(stack, range(1000, 1000 + args.campaign), None)
        near = schedule_singles(stack, t0 + timedelta(seconds=40), args.singles, 50.0, 0)
        scheduled_campaign = campaign(stack, range(2000, 2000 + args.campaign), t0 + timedelta(seconds=60))
        far = schedule_singles(stack, t0 + timedelta(seconds=200), args.singles // 2, 20.0, 3000)
        figures["accepted_in"] = (datetime.now(UTC) - t0).total_seconds()
        last_due = t0 + timedelta(seconds=220)
        time.sleep(max(0.0, (last_due - datetime.now(UTC)).total_seconds()) + 30)

        by_send_at = lambda row: row["send_at"]  # noqa: E731 -- a one-line key
        figures["near"] = measure(Message.objects.filter(pk__in=near), by_send_at)
        figures["campaign"] = measure(Message.objects.filter(campaign_id=scheduled_campaign), by_send_at)
        figures["far"] = measure(Message.objects.filter(pk__in=far), by_send_at)
        figures["quiet"] = measure(Message.objects.filter(campaign_id=quiet_campaign), lambda row: quiet_end)
        figures["quiet_deferred"] = Message.objects.filter(
            Q(campaign_id=quiet_campaign), Q(attempted_at__lt=quiet_end) | Q(sent_at__lt=quiet_end)
        ).count()
        figures["load_end"] = load_average()
    return figures


def report(figures: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    lines = [
        f"## Scheduled sends ({figures['config']}) — {figures['started']:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}`",
        "",
        f"Load average (1/5/15 min) at start {figures['load_start']}, at end {figures['load_end']}. Sandbox at "
        f"{LATENCY_MS} ms per send, no receipts; gunicorn with gunicorn.conf.py; "
        f"{'one qcluster' if figures['config'] == 'embedded' else 'two qclusters'}; default settings (waiter "
        f"horizon 150 s, sweep every minute). Everything accepted in {figures['accepted_in']:.1f} s from t0.",
        "",
        "| what | messages | claimed after its time | sent after its time | claimed early | still waiting |",
        "|---|---:|---|---|---:|---:|",
    ]
    for key, name in (
        ("near", f"{args.singles} singles, send_at t0+40…90 s (within the horizon)"),
        ("campaign", f"campaign of {args.campaign}, send_at t0+60 s"),
        ("far", f"{args.singles // 2} singles, send_at t0+200…220 s (beyond the horizon)"),
        ("quiet", f"campaign of {args.campaign} accepted inside quiet hours ending t0+25 s"),
    ):
        result = figures[key]
        lines.append(
            f"| {name} | {sum(result['statuses'].values())} | {summary(result['claimed'])} | "
            f"{summary(result['sent'])} | {result['early']} | {result['waiting']} |"
        )
    lines += [
        "",
        f"Quiet-hours campaign messages claimed or sent before the window ended: {figures['quiet_deferred']}.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=["embedded", "services"], default="embedded")
    parser.add_argument("--singles", type=int, default=200)
    parser.add_argument("--campaign", type=int, default=500)
    parser.add_argument("--no-results", action="store_true", help="print the report only")
    args = parser.parse_args()
    figures = run(args)
    command = "python bench/scheduled.py " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    text = report(figures, args, command.strip())
    print(text)
    if not args.no_results:
        write_results_section(f"## Scheduled sends ({figures['config']})", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
