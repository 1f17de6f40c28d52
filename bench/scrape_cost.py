"""What one scrape of ``/metrics`` and one probe of ``/healthz`` cost over a message table of 1,000,000 rows.

Fills a PostgreSQL database of its own (``DATABASE_URL``, whose name must start with ``bench``: it is dropped and
created again) with one account, one template and ``--rows`` messages in one ``INSERT ... SELECT generate_series``
(a month of history: most delivered, some sent or failed; a backlog of ``--queued`` messages queued within the
last 20 seconds and ``--sending`` sending), then ``VACUUM ANALYZE`` as autovacuum would.  Then, in one run, each
version of the code (the commit ``--before``, and this tree) answers the same requests in a child process of its
own with the production settings (DEBUG off, a metrics token): ``/metrics`` with the token, ``/healthz`` anonymous
and with the token.  Each request is made once to warm up, then three times; the table gives the best time and
the queries it made (``CaptureQueriesContext``).  Redis (``REDIS_URL``) serves the cache and the broker; nothing
in it is flushed (the probe writes and deletes keys of its own).  Appends or replaces its section at the end of
``bench/RESULTS.md`` (``--no-results`` prints only)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_ops REDIS_URL=redis://127.0.0.1:6379/5 \\
        .venv/bin/python bench/scrape_cost.py --before 3ac8b74
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
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

TITLE = "## Scrape cost of /metrics and /healthz"
REPEAT = 3
# (label, path, with the bearer token)
REQUESTS = [
    ("`/metrics` (token)", "/metrics", True),
    ("`/healthz` anonymous", "/healthz", False),
    ("`/healthz` (token)", "/healthz", True),
]
FILL_SQL = """
INSERT INTO messaging_message (
    account_id, template_id, template_id_sent, touser, url, client_msg_id, request_fingerprint, status, errcode,
    errmsg, msgid, attempts, attempted_at, claim_token, trace_id, created_at, updated_at, sent_at, finished_at
)
SELECT
    %(account)s, %(template)s, 'tpl-bench', 'openid-' || (g %% 50000), '', 'bench-' || g, '',
    CASE
        WHEN g <= %(queued)s THEN 'queued'
        WHEN g <= %(queued)s + %(sending)s THEN 'sending'
        WHEN g %% 20 = 0 THEN 'failed'
        WHEN g %% 10 = 1 THEN 'sent'
        ELSE 'delivered'
    END,
    CASE WHEN g > %(queued)s + %(sending)s AND g %% 20 = 0 THEN 43101 END,
    '', CASE WHEN g > %(queued)s THEN g END, CASE WHEN g > %(queued)s THEN 1 ELSE 0 END,
    CASE WHEN g > %(queued)s THEN now() - (g * interval '2.6 seconds') END, '', '',
    now() - (g * CASE WHEN g <= %(queued)s THEN interval '20 ms' ELSE interval '2.6 seconds' END),
    now() - (g * interval '2.6 seconds'),
    CASE WHEN g > %(queued)s + %(sending)s THEN now() - (g * interval '2.6 seconds') END,
    CASE WHEN g > %(queued)s + %(sending)s AND g %% 10 <> 1 THEN now() - (g * interval '2.6 seconds') END
FROM generate_series(1, %(rows)s) AS g
"""


def without_password(url: str) -> str:
    return re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", url)


def environment(scratch: Path) -> dict[str, str]:
    """Production settings (DEBUG off, keys of its own, a metrics token) for the parent and the children."""
    from cryptography.fernet import Fernet

    metrics_dir = scratch / "metrics"
    metrics_dir.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="wxnotify.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        WXNOTIFY_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        WXNOTIFY_METRICS_TOKEN=secrets.token_urlsafe(32),
        WXNOTIFY_SSL_REDIRECT="0",
        DJANGO_ALLOWED_HOSTS="testserver",
        WXNOTIFY_LOG_LEVEL="WARNING",
        WXNOTIFY_VAR_DIR=str(scratch / "var"),
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    return env


def fill(rows: int, queued: int, sending: int) -> float:
    """Migrate and fill the benchmark's database; returns the seconds the insert and VACUUM ANALYZE took."""
    from django.core.management import call_command
    from django.db import connection

    from accounts.models import OfficialAccount
    from templates_app.models import MessageTemplate

    call_command("migrate", verbosity=0)
    account = OfficialAccount.objects.create(
        name="Bench", appid="wx0000000000bench1", app_secret="s" * 32, token="benchtoken0123"
    )
    template = MessageTemplate.objects.create(
        account=account, template_id="tpl-bench", title="Bench", content="{{thing1.DATA}}", keywords=[]
    )
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            FILL_SQL,
            {"account": account.pk, "template": template.pk, "rows": rows, "queued": queued, "sending": sending},
        )
        cursor.execute("VACUUM ANALYZE messaging_message")
    connection.close()
    return time.perf_counter() - started


def measure() -> dict[str, dict[str, float]]:
    """In a child whose ``sys.path`` starts with the version under test: best time and queries of each request."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    token = os.environ["WXNOTIFY_METRICS_TOKEN"]
    results = {}
    for label, path, with_token in REQUESTS:
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if with_token else {}
        client.get(path, **headers)
        timings, queries, status, size = [], 0, 0, 0
        for _ in range(REPEAT):
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                response = client.get(path, **headers)
                timings.append((time.perf_counter() - started) * 1000)
            queries, status, size = len(captured), response.status_code, len(response.content)
        results[label] = {"ms": min(timings), "queries": queries, "status": status, "bytes": size}
    return results


def run_version(tree: Path, env: dict[str, str]) -> dict[str, dict[str, float]]:
    result = subprocess.run(
        [sys.executable, __file__, "--measure-tree", str(tree)],
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree)},
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(command: str, args, versions, fill_seconds: float, loads: tuple[str, str]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"{TITLE} — {when}",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work (load average {loads[0]} at "
        f"the start, {loads[1]} at the end); PostgreSQL and Redis on 127.0.0.1, production settings (DEBUG off, a "
        f"metrics token). {args.rows:,} messages in one account over a month ({args.queued:,} queued, "
        f"{args.sending:,} sending; of the rest 85 % delivered, 10 % sent, 5 % failed), filled with one "
        f"`INSERT ... SELECT generate_series` and `VACUUM ANALYZE` in {fill_seconds:.0f} s. Each request once to "
        f"warm up, then best of {REPEAT}, in the Django test client (no HTTP server); queries counted with "
        "`CaptureQueriesContext`.",
        "",
        "| Version | Request | Status | Best ms | Queries | Body bytes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, results in versions:
        for label, result in results.items():
            lines.append(
                f"| {name} | {label} | {result['status']} | {result['ms']:.1f} | {result['queries']} | "
                f"{result['bytes']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="commit to measure first, as the 'before' (e.g. 3ac8b74)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queued", type=int, default=1_000)
    parser.add_argument("--sending", type=int, default=100)
    parser.add_argument("--no-results", action="store_true", help="print the section, do not write RESULTS.md")
    parser.add_argument("--measure-tree", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure_tree:
        sys.path.insert(0, str(args.measure_tree))
        setup_django(dict(os.environ))
        print(json.dumps(measure()))
        return 0

    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith("postgres") or not os.environ.get("REDIS_URL"):
        raise SystemExit("set DATABASE_URL (PostgreSQL, a database named bench...) and REDIS_URL")
    urls = " ".join(f"{name}={without_password(os.environ[name])}" for name in ("DATABASE_URL", "REDIS_URL"))
    command = f"{urls} .venv/bin/python bench/scrape_cost.py {' '.join(sys.argv[1:])}".strip()
    loads_start = load_average()
    with tempfile.TemporaryDirectory(prefix="wxnotify-bench-scrape-") as scratch_name:
        scratch = Path(scratch_name)
        env = environment(scratch)
        recreate_database(database_url)
        setup_django(env)
        fill_seconds = fill(args.rows, args.queued, args.sending)
        trees: list[tuple[str, Path]] = []
        if args.before:
            before_dir = scratch / "before"
            before_dir.mkdir()
            trees.append((f"`{export_commit(args.before, before_dir)}` (before)", before_dir))
        trees.append((f"`{this_tree()}`", BASE_DIR))
        versions = [(name, run_version(tree, env)) for name, tree in trees]
    text = report(command, args, versions, fill_seconds, (loads_start, load_average()))
    print(text)
    if not args.no_results:
        write_results_section(TITLE, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
