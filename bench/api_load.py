"""API load benchmark: how much single-send traffic each configuration serves, and where the embedded default stops.

Runs `bench/dispatch.py`'s stack (the sandbox at 50 ms per send, qcluster workers delivering meanwhile, gunicorn
with gunicorn.conf.py) on one configuration per run and sends ``POST /api/v1/messages/`` open-loop at each rate of
``--rates`` (requests scheduled by the clock; latency counted from the scheduled instant, so a slow server cannot
hide its own queueing), then closed-loop with ``--clients`` clients.  Results replace this benchmark's section of
``bench/RESULTS.md`` for the configuration run::

    .venv/bin/python bench/api_load.py --config embedded
    .venv/bin/python bench/api_load.py --config services
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import load_average, write_results_section
from bench.dispatch import api_stack, drain
from bench.pipeline import Latencies, closed_loop, open_loop

# The embedded default's target: p99 at most this at 50 requests/s (issue 12).
TARGET_P99_MS = 200.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {"config": args.config, "load_start": load_average(), "started": datetime.now(UTC)}
    run_id = os.urandom(3).hex()
    with api_stack(args.config) as stack:
        for rate in args.rates:
            count = int(rate * args.seconds)
            bodies = [stack.body(index, f"load-{run_id}-{rate}-{index}") for index in range(count)]
            figures[f"open {rate:g}/s"] = open_loop(stack.url, stack.sessions, bodies, rate)
            drain(120)
        counter = iter(range(10**9))
        figures[f"closed, {args.clients} clients"] = closed_loop(
            stack.url,
            stack.sessions,
            lambda index: stack.body(index, f"load-{run_id}-c-{next(counter)}"),
            args.clients,
            args.seconds,
        )
        figures["drained"] = drain(300)
        figures["load_end"] = load_average()
    return figures


def report(figures: dict[str, Any], command: str) -> str:
    lines = [
        f"## API load ({figures['config']}) — {figures['started']:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}`",
        "",
        f"Load average (1/5/15 min) at start {figures['load_start']}, at end {figures['load_end']}. "
        "`POST /api/v1/messages/`, one message each, delivery running meanwhile (sandbox at 50 ms per send).",
        "",
        "| load | requests | accepted/s | p50 ms | p90 ms | p99 ms | max ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, result in figures.items():
        if isinstance(result, Latencies):
            lines.append(
                f"| {name} | {result.count} | {result.rate:.0f} | {result.percentile(0.5):.1f} | "
                f"{result.percentile(0.9):.1f} | {result.percentile(0.99):.1f} | "
                f"{max(result.ok_ms, default=float('nan')):.1f} | {result.errors or 'none'} |"
            )
    at_50 = figures.get("open 50/s")
    if figures["config"] == "embedded" and isinstance(at_50, Latencies):
        met = at_50.percentile(0.99) <= TARGET_P99_MS and not at_50.errors
        lines += ["", f"Target: p99 ≤ {TARGET_P99_MS:.0f} ms at 50 requests/s: {'met' if met else '**missed**'}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=["embedded", "services"], default="embedded")
    parser.add_argument("--rates", type=float, nargs="+", default=[25.0, 50.0, 100.0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each load phase")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--no-results", action="store_true", help="print the report only")
    args = parser.parse_args()
    figures = run(args)
    command = "python bench/api_load.py " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    text = report(figures, command.strip())
    print(text)
    if not args.no_results:
        write_results_section(f"## API load ({figures['config']})", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
