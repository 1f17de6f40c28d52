"""Follower sync benchmark: every follower of a big account from the sandbox into PostgreSQL, two commits side by side.

The WeChat sandbox runs in its own process (``manage.py wechat_sandbox``, optionally answering each follower read
after ``--user-latency-ms``) and is re-seeded through its control endpoint (``POST /sandbox/accounts``) with N
followers per size.  Each sync runs the way ``manage.py sync_followers`` runs it (``start_follower_sync`` and
``run_follower_sync``, with a progress callback per page) in a fresh child process, so its CPU time and peak
resident set are its own.  Per size and code version, on an emptied follower table:

1. the first sync (every follower created), timed;
2. a second sync of the same followers (every one updated), timed;
3. the second sync again under ``tracemalloc`` (slower, so not timed): the peak of Python allocations, which must
   not grow with the number of followers.

Reported per run: wall time, CPU of the sync process and of PostgreSQL (the backends serving the benchmark's
database, and apart from them every other postgres process on the host, which other work shares), peak memory
(``ru_maxrss`` and the tracemalloc peak), the WeChat calls the sandbox counted, and the counts the sync returned.
The rows both versions leave behind are compared (a digest of every column a sync writes but the run's
timestamps).

``--baseline-rev REV`` also runs the code of commit REV (exported with ``git archive`` into a temporary
directory; the children import the project from there, so the product code has no old/new switch): both
versions run back to back in one run, on the same sandbox and database, and the report shows both.

The benchmark owns its database (dropped, recreated and migrated every run; the name must start with ``bench``)
and flushes its Redis database.  All traffic stays on 127.0.0.1.  Replaces its section of ``bench/RESULTS.md``
(other sections stay; ``--no-results`` prints only)::

    .venv/bin/python bench/follower_sync.py --baseline-rev 45ced3e      # PostgreSQL bench_sync, Redis db 7
    .venv/bin/python bench/follower_sync.py --sizes 20000 --user-latency-ms 20 --no-results
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import (
    BASE_DIR,
    CpuMeter,
    Stack,
    backend_database,
    command_line,
    export_commit,
    flush_redis,
    load_average,
    port_is_open,
    recreate_database,
    services_urls,
    setup_django,
    stack_environment,
    this_tree,
    unwind_on_sigterm,
    verdict,
    write_results_section,
)
from bench.pipeline import register_account
from tests.servers import free_port

SECTION_TITLE = "## Follower sync"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_sync"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/7"
DEFAULT_SIZES = "20000,100000"
TARGET_SECONDS = 15.0
TARGET_FOLLOWERS = 100_000
# The tracemalloc peak "does not grow with the follower count" when the biggest size's peak stays within this
# factor of the smallest size's.
FLAT_FACTOR = 1.1
# Seeded accounts also list the sandbox's special followers (block_, rblock_, rfail_: two each).
SPECIAL_FOLLOWING = 6
# What a sync writes, without the run's own timestamps (synced_at, updated_at, created_at, unsubscribed_at).
DIGEST_SQL = """
    SELECT count(*), md5(string_agg(
        concat_ws('|', openid, unionid, subscribed, extract(epoch FROM subscribed_at), source, remark,
                  subscribe_scene, qr_scene_str, user_id),
        ',' ORDER BY openid))
    FROM accounts_follower WHERE account_id = %s
"""


@dataclass(frozen=True)
class Version:
    """Code to run the sync with: this tree, or a commit exported into ``project``."""

    label: str
    project: Path


# --- Child process: one sync ----------------------------------------------------------------------------------------


def child_sync(project: str, appid: str, *, trace: bool, profile: str | None) -> None:
    """Run one follower sync with the project found in ``project``; print a JSON line with its figures.

    Prints ``ready`` once Django is set up and waits for a line on stdin, so the parent's CPU meter brackets
    the sync alone.
    """
    sys.path.insert(0, project)
    import django

    django.setup()
    from accounts.models import OfficialAccount
    from accounts.services import run_follower_sync, start_follower_sync

    account = OfficialAccount.objects.get(appid=appid)
    sync = start_follower_sync(account)
    if sync is None:
        raise SystemExit("a follower sync is already queued or running for the benchmark account")
    pages: list[dict[str, float]] = []
    started = time.perf_counter()

    def progress(processed: int, total: int) -> None:
        page = {"processed": processed, "seconds": time.perf_counter() - started}
        if trace:
            page["traced_peak"] = tracemalloc.get_traced_memory()[1]
        pages.append(page)

    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("ready", flush=True)
    sys.stdin.readline()
    profiler = cProfile.Profile() if profile else None
    if trace:
        tracemalloc.start()
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    result = run_follower_sync(sync, progress=progress)
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    traced_peak = tracemalloc.get_traced_memory()[1] if trace else None
    if profiler is not None:
        profiler.dump_stats(profile)
    sync.refresh_from_db()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
                "baseline_kib": baseline_kib,
                "peak_kib": after.ru_maxrss,
                "traced_peak": traced_peak,
                "pages": pages,
                "status": sync.status,
                "error": sync.error,
                "result": None
                if result is None
                else [result.total, result.created, result.updated, result.unsubscribed],
            }
        ),
        flush=True,
    )


# --- Parent: stack, runs, report ------------------------------------------------------------------------------------


def sandbox_calls(sandbox: str, appid: str) -> dict[str, int]:
    account = requests.get(f"{sandbox}/sandbox/state", timeout=10).json()["accounts"][appid]
    return {**account["user_calls"], "token": sum(account["token_fetches"].values())}


def calls_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {
        name: after.get(name, 0) - before.get(name, 0) for name in after if after.get(name, 0) != before.get(name, 0)
    }


def empty_followers() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE accounts_follower, accounts_followersync CASCADE")
        cursor.execute("VACUUM ANALYZE accounts_follower")


def follower_digest(account_id: int) -> tuple[int, str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(DIGEST_SQL, [account_id])
        count, digest = cursor.fetchone()
    return count, digest


def run_child(
    stack: Stack, version: Version, appid: str, meter: CpuMeter, *, trace: bool, profile: str | None
) -> dict[str, Any]:
    argv = [str(Path(__file__).resolve()), "--child", str(version.project), appid]
    if trace:
        argv.append("--trace")
    if profile:
        argv += ["--profile", profile]
    process = subprocess.Popen(
        [sys.executable, *argv],
        cwd=version.project,
        env=stack.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        process_group=0,
    )
    try:
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the sync child exited with {process.wait()} before it was ready")
        meter.start()
        process.stdin.write("go\n")
        process.stdin.flush()
        line = process.stdout.readline()
        used = meter.stop()
        if process.wait(timeout=60) != 0 or not line:
            raise RuntimeError(f"the sync child failed with exit code {process.returncode}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    figures = json.loads(line)
    figures["cpu"] = used
    if figures["status"] != "done":
        raise RuntimeError(f"the sync ended {figures['status']}: {figures['error']}")
    return figures


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sandbox.demo import DEMO_ACCOUNT, DEMO_APPID

    sizes = [int(size) for size in args.sizes.split(",")]
    figures: dict[str, Any] = {
        "load_start": load_average(),
        "started": datetime.now(UTC),
        "sizes": sizes,
        "user_latency_ms": args.user_latency_ms,
        "runs": [],
        "digests": {},
    }
    database_url, redis_url = services_urls(DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL)
    sandbox_port = free_port()
    sandbox = f"http://127.0.0.1:{sandbox_port}"
    scratch = Path(tempfile.mkdtemp(prefix="wxnotify-bench-sync-"))
    metrics_dir = scratch / "metrics"
    metrics_dir.mkdir()
    env = stack_environment(database_url, redis_url, sandbox_port, str(metrics_dir))
    stack = Stack(env)
    try:
        database = recreate_database(database_url)
        figures.update(database=database, redis=redis_url)
        flush_redis(redis_url)
        setup_django(env)
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=0)

        versions = []
        if args.baseline_rev:
            baseline_dir = scratch / "baseline"
            baseline_dir.mkdir()
            versions.append(Version(export_commit(args.baseline_rev, baseline_dir), baseline_dir))
        versions.append(Version(this_tree(), BASE_DIR))
        figures["versions"] = [version.label for version in versions]

        sandbox_child = stack.manage(
            "sandbox",
            "wechat_sandbox",
            f"--port={sandbox_port}",
            "--followers=0",
            f"--user-latency-ms={args.user_latency_ms}",
            "--no-receipts",
        )
        stack.wait_for("the sandbox", lambda: port_is_open(sandbox_port))
        account = register_account(DEMO_ACCOUNT)
        titles: dict[int, str] = {}
        meter = CpuMeter(
            {
                "postgres backend": lambda pid, sample: (
                    sample.name == "postgres" and backend_database(pid, titles) == database
                ),
                # CpuMeter gives a process to the first part it matches: the backends above are not in here.
                "postgres other": lambda pid, sample: sample.name == "postgres",
                "sandbox": lambda pid, sample: sample.pgid == sandbox_child.pid,
            }
        )
        for size in sizes:
            requests.post(
                f"{sandbox}/sandbox/accounts", json={"appid": DEMO_APPID, "followers": size}, timeout=120
            ).raise_for_status()
            for version in versions:
                empty_followers()
                for run_name, trace in (("first", False), ("second", False), ("second, tracemalloc", True)):
                    if trace and args.no_tracemalloc:
                        continue
                    stack.check_alive()
                    print(f"[{time.strftime('%X')}] {version.label}: {size:,} followers, {run_name} sync", flush=True)
                    profile = None
                    if args.profile and not trace:
                        profile = str(Path(args.profile) / f"sync-{version.label.split()[0]}-{size}-{run_name}.prof")
                    before = sandbox_calls(sandbox, DEMO_APPID)
                    titles.clear()
                    measured = run_child(stack, version, DEMO_APPID, meter, trace=trace, profile=profile)
                    measured.update(
                        version=version.label,
                        size=size,
                        run=run_name,
                        calls=calls_between(before, sandbox_calls(sandbox, DEMO_APPID)),
                    )
                    figures["runs"].append(measured)
                    print(f"    {summary(measured)}", flush=True)
                    time.sleep(args.pause)
                figures["digests"][(version.label, size)] = follower_digest(account.pk)
        figures["load_end"] = load_average()
        figures["cpus"] = os.cpu_count()
        return figures
    finally:
        stack.stop_all()
        shutil.rmtree(scratch, ignore_errors=True)


def summary(measured: dict[str, Any]) -> str:
    total, created, updated, unsubscribed = measured["result"]
    traced = f", tracemalloc peak {measured['traced_peak'] / 2**20:.1f} MB" if measured["traced_peak"] else ""
    return (
        f"{measured['seconds']:.2f} s, CPU {measured['cpu_seconds']:.2f} s, postgres backend "
        f"{measured['cpu']['postgres backend']:.2f} s, calls {measured['calls']}, "
        f"{total} total / {created} created / {updated} updated / {unsubscribed} unsubscribed, "
        f"maxrss {measured['peak_kib'] / 1024:.0f} MB{traced}"
    )


# --- Report ---------------------------------------------------------------------------------------------------------


def expected_counts(size: int, run_name: str) -> list[int]:
    following = size + SPECIAL_FOLLOWING
    if run_name == "first":
        return [following, following, 0, 0]
    return [following, 0, following, 0]


def report(figures: dict[str, Any], command: str) -> str:
    runs = figures["runs"]
    current = figures["versions"][-1]
    sizes = figures["sizes"]

    def find(version: str, size: int, run_name: str) -> dict[str, Any] | None:
        return next(
            (r for r in runs if (r["version"], r["size"], r["run"]) == (version, size, run_name)),
            None,
        )

    rows = []
    biggest, smallest = max(sizes), min(sizes)
    first_big = find(current, biggest, "first")
    if biggest == TARGET_FOLLOWERS and first_big and not figures["user_latency_ms"]:
        rows.append(
            (
                f"{biggest:,} followers, first sync (all created): wall time",
                f"{first_big['seconds']:.1f} s",
                f"≤ {TARGET_SECONDS:.0f} s",
                verdict(first_big["seconds"] <= TARGET_SECONDS),
            )
        )
        second_big = find(current, biggest, "second")
        rows.append(
            (
                f"{biggest:,} followers, second sync (all updated): wall time",
                f"{second_big['seconds']:.1f} s",
                f"≤ {TARGET_SECONDS:.0f} s",
                verdict(second_big["seconds"] <= TARGET_SECONDS),
            )
        )
    traced_small = find(current, smallest, "second, tracemalloc")
    traced_big = find(current, biggest, "second, tracemalloc")
    if traced_small and traced_big and biggest != smallest:
        small_mb, big_mb = traced_small["traced_peak"] / 2**20, traced_big["traced_peak"] / 2**20
        rows.append(
            (
                f"tracemalloc peak, {smallest:,} vs {biggest:,} followers",
                f"{small_mb:.1f} MB vs {big_mb:.1f} MB",
                f"flat (≤ {FLAT_FACTOR}x)",
                verdict(big_mb <= small_mb * FLAT_FACTOR),
            )
        )
    counts_ok = all(r["result"] == expected_counts(r["size"], r["run"]) for r in runs)
    rows.append(
        (
            "Counts returned (total / created / updated / unsubscribed)",
            "as expected in every run" if counts_ok else "**not as expected** (see the runs)",
            "first: N/N/0/0, second: N/0/N/0",
            verdict(counts_ok),
        )
    )
    if len(figures["versions"]) > 1:
        same = all(len({figures["digests"][(version, size)] for version in figures["versions"]}) == 1 for size in sizes)
        rows.append(
            (
                "Rows written, both versions (digest of every synced column)",
                "identical" if same else "**different**",
                "identical",
                verdict(same),
            )
        )

    def run_line(r: dict[str, Any]) -> str:
        calls = r["calls"]
        calls_text = (
            f"{calls.get('user/get', 0)} + {calls.get('user/info/batchget', 0)}"
            + (f" + {calls['token']} token" if calls.get("token") else "")
            + "".join(
                f" + {n} {name}" for name, n in calls.items() if name not in ("user/get", "user/info/batchget", "token")
            )
        )
        if r["traced_peak"] is None:
            traced, wall, rate = "–", f"{r['seconds']:.2f}", f"{r['size'] / r['seconds']:,.0f}"
        else:
            traced, wall, rate = f"{r['traced_peak'] / 2**20:.1f}", f"({r['seconds']:.2f})", "–"
        return (
            f"| {r['version']} | {r['size']:,} | {r['run']} | {wall} | {rate} | {r['cpu_seconds']:.2f} | "
            f"{r['cpu']['postgres backend']:.2f} | {r['cpu']['postgres other']:.2f} | {r['cpu']['sandbox']:.2f} | "
            f"{calls_text} | "
            f"{r['peak_kib'] / 1024:.0f} ({r['baseline_kib'] / 1024:.0f}) | {traced} | "
            f"{' / '.join(str(n) for n in r['result'])} |"
        )

    latency = figures["user_latency_ms"]
    versions_text = " and ".join(f"`{label}`" for label in figures["versions"])
    lines = [
        f"{SECTION_TITLE} — {figures['started']:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {figures['cpus']} CPUs, Python {platform.python_version()}, shared with other work; "
        f"load average (1/5/15 min) {figures['load_start']} at start, {figures['load_end']} at end.",
        f"Stack: PostgreSQL (database `{figures['database']}`, dropped and recreated), Redis `{figures['redis']}` "
        "(cache and token lock; flushed), DEBUG off; WeChat sandbox in its own process answering follower reads "
        f"{f'after {latency} ms' if latency else 'at once'}. Code: {versions_text} (the last is the one measured "
        "against the targets). Each sync runs in a fresh process through `start_follower_sync` + "
        "`run_follower_sync`, as `manage.py sync_followers` does; the follower table is emptied before each "
        "version's first sync.",
        "",
        "| figure | measured | target | |",
        "|---|---|---|---|",
        *(f"| {name} | {value} | {target} | {result} |" for name, value, target, result in rows),
        "",
        "Every run (CPU in seconds; *postgres backend*: the processes serving the benchmark's database, *other "
        "postgres*: every other postgres process on the host (WAL writer, checkpointer, other work's backends); "
        "WeChat calls as the sandbox counted them: "
        "user/get + batchget; peak RSS: `ru_maxrss` of the sync process, after `django.setup()` in brackets; "
        "tracemalloc runs are slower: their wall time in brackets is not a figure of the sync):",
        "",
        "| code | followers | sync | wall s | followers/s | sync CPU | postgres backend | other postgres | sandbox | "
        "WeChat calls | peak RSS MB | tracemalloc peak MB | total / created / updated / unsubscribed |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
        *(run_line(r) for r in runs),
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"follower counts, comma-separated ({DEFAULT_SIZES})")
    parser.add_argument("--baseline-rev", help="also run the code of this commit, before this tree's")
    parser.add_argument(
        "--user-latency-ms", type=int, default=0, help="sandbox delay per user/get and batchget call (e.g. 20)"
    )
    parser.add_argument("--no-tracemalloc", action="store_true", help="leave out the tracemalloc runs")
    parser.add_argument("--profile", metavar="DIR", help="write cProfile stats of every timed sync into DIR")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between runs, for the shared machine")
    parser.add_argument("--no-results", action="store_true", help="print only, do not write bench/RESULTS.md")
    parser.add_argument("--child", nargs=2, metavar=("PROJECT", "APPID"), help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_sync(*args.child, trace=args.trace, profile=args.profile)
        return 0
    command = command_line()
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    unwind_on_sigterm()
    figures = run(args)
    text = report(figures, command)
    print(text)
    if not args.no_results:
        write_results_section(SECTION_TITLE, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
