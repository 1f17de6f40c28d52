"""What the busy pages cost with 1,000,000 messages and 1,000,000 followers on PostgreSQL (issue 12, "The million").

Fills a PostgreSQL database of its own (``DATABASE_URL``, whose name must start with ``bench``: it is dropped and
created again) with three accounts (80 / 15 / 5 % of the rows), a template each, three campaigns (a big one of
account A, a small one each of A and B), ``--messages`` messages in one ``INSERT ... SELECT generate_series`` (a
backlog queued and sending, then 82.5 % delivered, 10 % sent, 7.5 % failed; the big campaign's 40 % of the rows sent
3 to 6 hours ago, the rest over a month) and ``--followers`` followers in another (4 % unsubscribed),
then ``VACUUM ANALYZE`` as autovacuum would.

Then each version of the code (the commit ``--before``, and this tree) answers the same requests in a child process
of its own with the production settings (DEBUG off), as the real roles call them: a superuser, and a business staff
member (``is_staff``, the migrated group) who operates account A only; the API with each one's DRF token.  The
schema is the before version's while it is measured (its ``migrate``), then this tree's ``migrate`` runs (new
indexes are built over the filled tables, ``ANALYZE`` again) before this tree is measured.  Each request is made once
to warm up, then three times; the table gives the best time and the queries it made (``CaptureQueriesContext``);
``--show-queries`` prints the slowest query of each request to stderr.  Redis (``REDIS_URL``) serves the cache and
the broker; nothing in it is flushed.  Appends or replaces its section at the end of ``bench/RESULTS.md``
(``--no-results`` prints only)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_scale REDIS_URL=redis://127.0.0.1:6379/5 \\
        .venv/bin/python bench/scale.py --before b46ac6c
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench._stack import (  # noqa: E402 -- needs the project path
    export_commit,
    load_average,
    recreate_database,
    setup_django,
    this_tree,
    write_results_section,
)
from bench.scrape_cost import environment, without_password  # noqa: E402

TITLE = "## The million: pages over 1,000,000 messages and 1,000,000 followers"
REPEAT = 3
TARGET_MS = 500
SUPERUSER, STAFF = "bench-admin", "bench-staff"
APPIDS = ("wx00000000000benca", "wx00000000000bencb", "wx00000000000bencc")
# (label, path, how): "session" logs the user in, "token" sends their DRF token.  {big} is the big campaign's id,
# {appid} account A's AppID, {appid_c} account C's.
REQUESTS = [
    ("admin message changelist", "/admin/messaging/message/", "session"),
    ("admin message changelist, failed", "/admin/messaging/message/?status__exact=failed", "session"),
    ("admin follower changelist", "/admin/accounts/follower/", "session"),
    ("operations dashboard", "/admin/ops/dashboard/", "session"),
    ("admin campaign change page", "/admin/messaging/campaign/{big}/change/", "session"),
    ("console campaign page", "/console/campaigns/{big}/", "session"),
    ("API messages of account A", "/api/v1/messages/?account={appid}", "token"),
    ("API messages of account A, failed", "/api/v1/messages/?account={appid}&status=failed", "token"),
    # Account C has no failed message: nothing to find, however far back one looks (and staff may not see C).
    ("API messages of account C, failed (none)", "/api/v1/messages/?account={appid_c}&status=failed", "token"),
]
# Account of row g: A for g % 20 in 0..15, B for 16..18, C for 19; campaigns: A's big one for g % 20 in 0..7, A's
# small one for 8, B's for 16; the rest are single messages.
MESSAGES_SQL = """
INSERT INTO messaging_message (
    account_id, template_id, template_id_sent, touser, data, url, client_msg_id, request_fingerprint, status, errcode,
    errmsg, msgid, attempts, attempted_at, claim_token, campaign_id, trace_id, created_at, updated_at, sent_at,
    finished_at, wechat_rid
)
SELECT
    CASE WHEN g %% 20 < 16 THEN %(a)s WHEN g %% 20 < 19 THEN %(b)s ELSE %(c)s END,
    CASE WHEN g %% 20 < 16 THEN %(ta)s WHEN g %% 20 < 19 THEN %(tb)s ELSE %(tc)s END,
    'tpl-bench', 'openid-' || (g %% 800000), CASE WHEN g %% 20 IN (0, 1, 2, 3, 4, 5, 6, 7, 8, 16) THEN NULL
    ELSE '{"thing1": {"value": "bench"}}'::jsonb END, '', 'bench-' || g, '',
    CASE
        WHEN g <= %(queued)s THEN 'queued'
        WHEN g <= %(queued)s + %(sending)s THEN 'sending'
        WHEN g %% 20 = 10 OR g %% 40 = 3 THEN 'failed'
        WHEN g %% 10 = 1 THEN 'sent'
        ELSE 'delivered'
    END,
    CASE WHEN g > %(queued)s + %(sending)s AND (g %% 20 = 10 OR g %% 40 = 3)
        THEN (ARRAY[43101, 40037, -9001])[1 + g %% 3] END,
    '', CASE WHEN g > %(queued)s THEN g END, CASE WHEN g > %(queued)s THEN 1 ELSE 0 END,
    CASE WHEN g > %(queued)s THEN at END, '',
    CASE WHEN g %% 20 < 8 THEN %(big)s WHEN g %% 20 = 8 THEN %(small_a)s WHEN g %% 20 = 16 THEN %(small_b)s END, '',
    at, at, CASE WHEN g > %(queued)s + %(sending)s THEN at END,
    CASE WHEN g > %(queued)s + %(sending)s AND g %% 10 <> 1 THEN at END, ''
FROM (
    SELECT g, CASE
        WHEN g <= %(queued)s THEN now() - (g * interval '20 ms')
        -- The big campaign went out a few hours ago, at about 100 messages a second; the rest spans a month.
        WHEN g %% 20 < 8 THEN now() - interval '3 hours' - (g * interval '10 ms')
        ELSE now() - (g * interval '2.6 seconds')
    END AS at
    FROM generate_series(1, %(rows)s) AS g
) AS numbered
"""
FOLLOWERS_SQL = """
INSERT INTO accounts_follower (
    account_id, openid, unionid, subscribed, subscribed_at, unsubscribed_at, source, remark, subscribe_scene,
    qr_scene_str, synced_at, created_at, updated_at
)
SELECT
    CASE WHEN g %% 10 < 8 THEN %(a)s WHEN g %% 10 = 8 THEN %(b)s ELSE %(c)s END,
    'openid-' || g, '', g %% 25 <> 0, now() - (g * interval '30 seconds'),
    CASE WHEN g %% 25 = 0 THEN now() - (g * interval '10 seconds') END, 'sync', '', '', '', now(), now(), now()
FROM generate_series(1, %(rows)s) AS g
"""


def migrate(tree: Path, env: dict[str, str]) -> None:
    """``manage.py migrate`` of one version of the code, so each version is measured on its own schema."""
    subprocess.run(
        [sys.executable, str(tree / "manage.py"), "migrate", "--verbosity", "0"],
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree)},
        check=True,
        timeout=1800,
    )


def analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE messaging_message")
        cursor.execute("VACUUM ANALYZE accounts_follower")
    connection.close()


def fill(messages: int, followers: int, queued: int, sending: int) -> float:
    """Accounts, templates, campaigns, users, then the two big tables; returns the seconds the fill took."""
    from django.contrib.auth.models import Group, User
    from django.db import connection

    from accounts.models import OfficialAccount
    from accounts.selectors import STAFF_GROUP
    from messaging.models import Campaign
    from templates_app.models import MessageTemplate

    accounts, templates = [], []
    for letter, appid in zip("ABC", APPIDS, strict=True):
        account = OfficialAccount.objects.create(
            name=f"Bench {letter}", appid=appid, app_secret="s" * 32, token=f"benchtoken{letter}"
        )
        accounts.append(account)
        templates.append(
            MessageTemplate.objects.create(
                account=account, template_id="tpl-bench", title="Bench", content="{{thing1.DATA}}", keywords=[]
            )
        )

    def campaign(index: int, name: str, count: int) -> int:
        return Campaign.objects.create(
            account=accounts[index],
            template=templates[index],
            name=name,
            data={"thing1": {"value": "bench"}},
            recipient_kind=Campaign.RecipientKind.ALL_SUBSCRIBED,
            recipient_count=count,
            state=Campaign.State.RUNNING,
        ).pk

    ids = {
        "big": campaign(0, "Big campaign of A", messages * 8 // 20),
        "small_a": campaign(0, "Small campaign of A", messages // 20),
        "small_b": campaign(1, "Small campaign of B", messages // 20),
    }
    User.objects.create_superuser(SUPERUSER, password="unused-bench-password")
    staff = User.objects.create_user(STAFF, password="unused-bench-password", is_staff=True)
    staff.groups.add(Group.objects.get(name=STAFF_GROUP))
    accounts[0].operators.add(staff)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        by_letter = {letter: account.pk for letter, account in zip("abc", accounts, strict=True)}
        template_ids = {f"t{letter}": template.pk for letter, template in zip("abc", templates, strict=True)}
        cursor.execute(
            MESSAGES_SQL,
            {**by_letter, **template_ids, **ids, "rows": messages, "queued": queued, "sending": sending},
        )
        cursor.execute(FOLLOWERS_SQL, {**by_letter, "rows": followers})
    analyze()
    return time.perf_counter() - started


def measure(show_queries: bool) -> dict[str, dict[str, dict[str, float]]]:
    """In a child whose ``sys.path`` starts with the version under test: best time and queries of each request."""
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from rest_framework.authtoken.models import Token

    from messaging.models import Campaign

    big = Campaign.objects.get(name="Big campaign of A").pk
    results: dict[str, dict[str, dict[str, float]]] = {}
    for username in (SUPERUSER, STAFF):
        user = User.objects.get(username=username)
        token = Token.objects.get_or_create(user=user)[0].key
        session = Client(HTTP_ACCEPT_LANGUAGE="en")
        session.force_login(user)
        anonymous = Client(HTTP_ACCEPT_LANGUAGE="en")
        for label, template, how in REQUESTS:
            path = template.format(big=big, appid=APPIDS[0], appid_c=APPIDS[2])
            if how == "session":
                client, headers = session, {}
            else:
                client, headers = anonymous, {"HTTP_AUTHORIZATION": f"Token {token}"}
            client.get(path, **headers)
            timings, slowest = [], None
            for _ in range(REPEAT):
                with CaptureQueriesContext(connection) as captured:
                    started = time.perf_counter()
                    response = client.get(path, **headers)
                    timings.append((time.perf_counter() - started) * 1000)
                slowest = max(captured.captured_queries, key=lambda query: float(query["time"]), default=None)
            if show_queries and slowest is not None:
                print(f"{username} {label}: {slowest['time']} s {slowest['sql'][:600]}", file=sys.stderr)
            results.setdefault(label, {})[username] = {
                "ms": min(timings),
                "queries": len(captured),
                "status": response.status_code,
            }
    return results


def run_version(tree: Path, env: dict[str, str], show_queries: bool) -> dict[str, dict[str, dict[str, float]]]:
    argv = [sys.executable, __file__, "--measure-tree", str(tree), *(["--show-queries"] if show_queries else [])]
    result = subprocess.run(
        argv,
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree)},
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        timeout=1800,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _cell(result: dict[str, float]) -> str:
    mark = "" if result["status"] == 200 else f" ({result['status']})"
    over = " ✗" if result["ms"] > TARGET_MS else ""
    return f"{result['ms']:.0f}{over} / {result['queries']}{mark}"


def report(command: str, args, versions, seconds: dict[str, float], loads: tuple[str, str]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    names = [name for name, _results in versions]
    lines = [
        f"{TITLE} — {when}",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work (load average {loads[0]} at "
        f"the start, {loads[1]} at the end); PostgreSQL and Redis on 127.0.0.1, production settings (DEBUG off). "
        f"{args.messages:,} messages in three accounts (80 / 15 / 5 %; {args.queued:,} queued, {args.sending:,} "
        "sending, of the rest 82.5 % delivered, 10 % sent, 7.5 % failed; 50 % in campaigns, the big one of account A "
        "holding 40 % of all rows, sent 3 to 6 hours ago, the rest spread over a month) and "
        f"{args.followers:,} followers (80 / 10 / 10 %), filled with "
        f"`INSERT ... SELECT generate_series` and `VACUUM ANALYZE` in {seconds['fill']:.0f} s; this tree's "
        f"migrations over the filled tables took {seconds['migrate']:.0f} s. Each request once to warm up, then best "
        f"of {REPEAT}, in the Django test client (no HTTP server); queries counted with `CaptureQueriesContext`. "
        f"*admin* is a superuser; *staff* a business staff member (`is_staff`, the migrated group) operating account "
        f"A only; the API is called with each one's DRF token. Cells: best ms / queries; ✗ over {TARGET_MS} ms.",
        "",
        "| Request | " + " | ".join(f"{name} admin | {name} staff" for name in names) + " |",
        "| --- |" + " ---: | ---: |" * len(names),
    ]
    for label, _template, _how in REQUESTS:
        cells = []
        for _name, results in versions:
            cells += [_cell(results[label][SUPERUSER]), _cell(results[label][STAFF])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="commit to measure first, as the 'before' (e.g. b46ac6c)")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--followers", type=int, default=1_000_000)
    parser.add_argument("--queued", type=int, default=1_000)
    parser.add_argument("--sending", type=int, default=100)
    parser.add_argument("--show-queries", action="store_true", help="print each request's slowest query to stderr")
    parser.add_argument("--no-results", action="store_true", help="print the section, do not write RESULTS.md")
    parser.add_argument("--measure-tree", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure_tree:
        sys.path.insert(0, str(args.measure_tree))
        setup_django(dict(os.environ))
        print(json.dumps(measure(args.show_queries)))
        return 0

    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith("postgres") or not os.environ.get("REDIS_URL"):
        raise SystemExit("set DATABASE_URL (PostgreSQL, a database named bench...) and REDIS_URL")
    urls = " ".join(f"{name}={without_password(os.environ[name])}" for name in ("DATABASE_URL", "REDIS_URL"))
    command = f"{urls} .venv/bin/python bench/scale.py {' '.join(sys.argv[1:])}".strip()
    loads_start = load_average()
    seconds = {"migrate": 0.0}
    with tempfile.TemporaryDirectory(prefix="wxnotify-bench-scale-") as scratch_name:
        scratch = Path(scratch_name)
        env = environment(scratch)
        recreate_database(database_url)
        first = BASE_DIR
        trees: list[tuple[str, Path]] = []
        if args.before:
            first = scratch / "before"
            first.mkdir()
            trees.append((f"`{export_commit(args.before, first)}` (before)", first))
        trees.append((f"`{this_tree()}`", BASE_DIR))
        migrate(first, env)
        setup_django(env)
        seconds["fill"] = fill(args.messages, args.followers, args.queued, args.sending)
        versions = []
        for name, tree in trees:
            if tree == BASE_DIR and first != BASE_DIR:
                started = time.perf_counter()
                migrate(tree, env)
                analyze()
                seconds["migrate"] = time.perf_counter() - started
            versions.append((name, run_version(tree, env, args.show_queries)))
    text = report(command, args, versions, seconds, (loads_start, load_average()))
    print(text)
    if not args.no_results:
        write_results_section(TITLE, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
