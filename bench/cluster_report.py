"""bench/cluster.py's figures: the verdicts from what the run collected, and its section of ``bench/RESULTS.md``."""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path
from typing import Any

TOKEN_PATHS = ("/cgi-bin/token", "/cgi-bin/stable_token")
SEND_METRIC = "wxnotify_send_latency_seconds"


def host_sends_from_metrics(directory: Path) -> int:
    """Send attempts a host's own processes counted in its PROMETHEUS_MULTIPROC_DIR (what its /metrics would say)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return int(
        sum(
            sample.value
            for metric in registry.collect()
            if metric.name == SEND_METRIC
            for sample in metric.samples
            if sample.name == f"{SEND_METRIC}_count"
        )
    )


def verdicts(
    figures: dict[str, Any],
    args: argparse.Namespace,
    *,
    cut_host: str,
    worker_hosts: tuple[str, ...],
    deliveries: tuple[str, ...],
) -> dict[str, Any]:
    """Lost, duplicated, token fetches, each worker host's share, and what became of the dead host's messages."""
    rows = [row for row in figures["rows"] if not row["client_msg_id"].startswith("warm-")]
    delivered: Counter[tuple[str, str]] = Counter()
    first_delivery: dict[tuple[str, str], float] = {}
    for send in figures["sends"]:
        if send["outcome"] in deliveries:
            key = (send["touser"], send["client_msg_id"])
            delivered[key] += 1
            first_delivery.setdefault(key, send["time"])
    campaign_rows = [row for row in rows if row["campaign_id"] == figures["campaign"]["id"]]
    single_ids = {row["client_msg_id"] for row in rows if row["campaign_id"] is None}
    lost = {
        "singles_without_row": sum(1 for cmid in figures["accepted_singles"] if cmid not in single_ids),
        "campaign_short": args.recipients - figures["campaign_recipients"],
        "campaign_rows_short": figures["campaign_recipients"] - len(campaign_rows),
        "not_sent": sum(1 for row in rows if row["status"] not in ("sent", "delivered")),
        "sent_never_delivered": sum(
            1
            for row in rows
            if row["status"] in ("sent", "delivered") and not delivered[(row["touser"], row["client_msg_id"])]
        ),
    }
    duplicated = {key: count for key, count in delivered.items() if count > 1}

    before, at_cut, after = figures["sends_before"], figures["cut"]["sends_at_cut"], figures["sends_after"]
    total_sends = sum(after.get(host, 0) - before.get(host, 0) for host in worker_hosts)
    sends_before_cut = sum(at_cut.get(host, 0) - before.get(host, 0) for host in worker_hosts)
    shares = {
        host: {
            "sends": after.get(host, 0) - before.get(host, 0),
            "share": (after.get(host, 0) - before.get(host, 0)) / total_sends if total_sends else 0.0,
            "before_cut": at_cut.get(host, 0) - before.get(host, 0),
            "share_before_cut": (at_cut.get(host, 0) - before.get(host, 0)) / sends_before_cut
            if sends_before_cut
            else 0.0,
            "after_cut": after.get(host, 0) - at_cut.get(host, 0),
            "metrics_files": figures["metrics_sends"][host] - figures["metrics_before"][host],
        }
        for host in worker_hosts
    }
    other_senders = {host: n for host, n in after.items() if host not in worker_hosts and n}
    token_by_host = {
        host: sum(paths.get(path, 0) for path in TOKEN_PATHS)
        for host, paths in figures["requests_by_host"].items()
        if any(paths.get(path) for path in TOKEN_PATHS)
    }
    token_total = sum(figures["token_fetches"].values())

    cut = figures["cut"]
    dead = [(touser, cmid) for _pk, _claim, touser, cmid in cut["dead_held"]]
    dead_once = sum(1 for key in dead if delivered[key] == 1)
    # Attempts after the cut can only be the other host's (the cut host's count after it is checked to be 0).
    attempts_after: dict[tuple[str, str], list[float]] = {}
    for send in figures["sends"]:
        if send["time"] > cut["at"]:
            attempts_after.setdefault((send["touser"], send["client_msg_id"]), []).append(send["time"])
    dead_retried = [key for key in dead if key in attempts_after]
    dead_last = max((max(attempts_after[key]) - cut["at"] for key in dead_retried), default=None)
    survivors = [host for host in worker_hosts if host != cut_host]
    drained_at = figures["drained_at"]
    found = {
        "messages": len(rows),
        "campaign_accept_seconds": figures["campaign"]["accept_seconds"],
        "singles_accepted": len(figures["accepted_singles"]),
        "singles_outcomes": dict(figures["singles"]),
        "statuses": dict(Counter(row["status"] for row in rows)),
        "lost": lost,
        "lost_total": sum(max(0, n) for n in lost.values()),
        "duplicated_messages": len(duplicated),
        "extra_deliveries": sum(n - 1 for n in duplicated.values()),
        "deduplicated_resends": sum(1 for send in figures["sends"] if send["outcome"] == "deduplicated"),
        "unfinished": figures["unfinished"],
        "token_fetches": token_total,
        "token_fetches_by_endpoint": figures["token_fetches"],
        "token_fetches_by_host": token_by_host,
        "shares": shares,
        "other_senders": other_senders,
        "cut": {
            "host": cut_host,
            "processes_killed": cut["processes"],
            "sending_at_cut": cut["sending"],
            "dead_held": len(dead),
            "dead_delivered_once": dead_once,
            "dead_retried_by_other": len(dead_retried),
            "dead_delivered_before_cut": sum(1 for key in dead if first_delivery.get(key, cut["at"]) < cut["at"]),
            "dead_last_delivery_seconds": dead_last,
            "at_seconds": cut["at"] - figures["t0"],
            "drained_seconds_after_cut": (drained_at - cut["at"]) if drained_at else None,
        },
        "seconds": (drained_at or figures["ended"]) - figures["t0"],
    }
    found["checks"] = {
        "0 lost": found["lost_total"] == 0,
        "0 duplicate deliveries": not duplicated,
        "nothing queued or sending after the drain": found["unfinished"] == 0,
        "1 token fetch in total": token_total == 1,
        "both worker hosts sent before the cut": all(shares[host]["before_cut"] > 0 for host in worker_hosts),
        "the cut host sent nothing after the cut": shares[cut_host]["after_cut"] == 0,
        "the other host sent after the cut": all(shares[host]["after_cut"] > 0 for host in survivors),
        "the dead host's messages delivered once each": dead_once == len(dead),
        "the other host sent each of the dead host's messages again": len(dead_retried) == len(dead),
        "only worker hosts sent": not other_senders,
    }
    found["ok"] = all(found["checks"].values())
    return found


def report(
    figures: dict[str, Any], found: dict[str, Any], args: argparse.Namespace, *, command: str, title: str, python: str
) -> str:
    shares, cut, lost = found["shares"], found["cut"], found["lost"]
    drained = cut["drained_seconds_after_cut"]
    dead_last = cut["dead_last_delivery_seconds"]
    lines = [
        f"{title} — {figures['started']:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}`",
        "",
        f"Code: `{figures['code']}`. Machine: {os.cpu_count()} CPUs shared by every host and the client, Python "
        f"{python}; load average (1/5/15 min) {figures['load_start']} at start, {figures['load_end_average']} at end.",
        "Hosts (network namespaces on one bridge, a hostname and directories each): `db` (PostgreSQL and Redis on "
        "its own address), `web1`, `web2` (gunicorn, gunicorn.conf.py), `worker1`, `worker2` (`qcluster`), `sandbox` "
        f"(WeChat, {args.latency_ms} ms per send, receipts to web2); the client in the root namespace.",
        f"Load: a campaign of {args.recipients:,} recipients through web1 (accepted in "
        f"{found['campaign_accept_seconds']:.1f} s) and {found['singles_accepted']:,} single sends at "
        f"{args.single_rate:g}/s, web1 and web2 in turn. Cut: when {args.cut_at:.0%} of the expected sends had "
        f"reached the sandbox ({cut['at_seconds']:.0f} s in), every process of `{cut['host']}` was killed with "
        f"SIGKILL ({cut['processes_killed']} processes).",
        "",
        "| check | |",
        "|---|---|",
        *(f"| {name} | {'met' if ok else '**MISSED**'} |" for name, ok in found["checks"].items()),
        "",
        "Each worker host's send requests at the sandbox (counted by source address; retries included), and the "
        "send attempts its own processes counted in its metrics files (`wxnotify_send_latency_seconds_count`; a "
        "process killed mid-batch never records the batch it was sending):",
        "",
        "| host | sends | share | before the cut (share) | after the cut | in its own metrics files |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {host} | {s['sends']:,} | {s['share']:.1%} | {s['before_cut']:,} ({s['share_before_cut']:.1%}) | "
            f"{s['after_cut']:,} | {s['metrics_files']:,} |"
            for host, s in shares.items()
        ),
        "",
        f"Messages: {found['messages']:,} ({found['statuses']}); lost **{found['lost_total']}** ({lost}); "
        f"duplicate deliveries at the sandbox **{found['duplicated_messages']}** ({found['extra_deliveries']} extra; "
        f"{found['deduplicated_resends']} resends answered from WeChat's client_msg_id de-duplication, not delivered "
        "again); "
        f"queued or sending after the drain {found['unfinished']}.",
        "",
        f"Token fetches in total: **{found['token_fetches']}** ({found['token_fetches_by_endpoint']}), by host "
        f"{found['token_fetches_by_host']}.",
        "",
        f"The cut: {cut['sending_at_cut']} messages were `sending`; {cut['dead_held']} were still in the dead host's "
        f"claims 5 s later (its batches in flight). {cut['dead_delivered_before_cut']} of those had reached WeChat "
        "before the host died, without the outcome being written; the other host sent "
        f"{cut['dead_retried_by_other']} of them again once their lease ran out"
        + (f" (the last {dead_last:.0f} s after the cut)" if dead_last is not None else "")
        + f", with the same client_msg_id, so each of the {cut['dead_held']} was delivered "
        f"{'exactly once' if cut['dead_delivered_once'] == cut['dead_held'] else 'NOT exactly once'} "
        f"({cut['dead_delivered_once']}); "
        + (f"everything drained {drained:.0f} s after the cut." if drained is not None else "**not drained**.")
        + f" Whole run {found['seconds']:.0f} s from the campaign's acceptance.",
        "",
    ]
    return "\n".join(lines)
