"""Many hosts, proven: wxnotify across six hosts on one machine, and one worker host cut off mid-run.

wxnotify scales by adding web and qcluster hosts around one PostgreSQL and one Redis (issue 12).  This run makes
the hosts of network namespaces (bench/_netns.py: a bridge, a veth pair and an address each, a hostname each):

- ``db``: a PostgreSQL cluster and a redis-server of the run's own, listening on the host's address only;
- ``web1``, ``web2``: gunicorn with the repository's gunicorn.conf.py, on port 8000 of their own addresses;
- ``worker1``, ``worker2``: ``manage.py qcluster`` (Redis broker);
- ``sandbox``: ``manage.py wechat_sandbox`` playing WeChat (``--latency-ms`` per send), pushing delivery receipts
  to web2's callback URL;

and the benchmark itself, in the root namespace, is the client (and reads the database to follow the run).  Every
host has its own directories (``WXNOTIFY_VAR_DIR``, ``PROMETHEUS_MULTIPROC_DIR``): nothing is shared but the
network, PostgreSQL and Redis.  The load: a campaign to ``--recipients`` followers through web1's API and a stream
of single sends at ``--single-rate`` for ``--seconds`` taking turns between web1 and web2.  When ``--cut-at`` of
the expected sends have reached the sandbox, every process of worker2 is killed with SIGKILL at once (the host is
gone); the run then waits up to ``--drain-timeout`` s for nothing to be queued or sending.

Figures: each worker host's share of the sends (the sandbox counts API requests by source address), before and
after the cut; token fetches in total (sandbox counters; target 1) and by host; lost messages, duplicate deliveries
at the sandbox (targets 0) and the messages the dead host held, each delivered once by the other.  The sends each
worker host's own metrics files counted are read too.  Exit status 1 when a target is missed.

Run as root (``ip netns``; PostgreSQL's binaries run as ``postgres`` via runuser).  The full run takes 4-8
minutes and replaces its section of ``bench/RESULTS.md`` (``## Many hosts``)::

    .venv/bin/python bench/cluster.py
    .venv/bin/python bench/cluster.py --recipients 500 --single-rate 5 --seconds 20 --no-results   # a minute

Namespaces, processes and servers are removed at exit, also after a failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._netns import Host, Network, unavailable_reason
from bench._stack import (
    BASE_DIR,
    MANAGE_PY,
    Stack,
    ThrowawayPostgres,
    load_average,
    redis_server_argv,
    setup_django,
    stack_environment,
    this_tree,
    write_results_section,
)
from bench.chaos import DELIVERIES, UNFINISHED, SingleStream, log, print_log_tails, status_counts, with_database
from bench.cluster_report import host_sends_from_metrics, report, verdicts
from bench.pipeline import (
    API_THROTTLES_RAISED,
    TEMPLATE_DATA,
    ThreadSessions,
    api_token,
    insert_followers,
    message_body,
    register_account,
)

SECTION_TITLE = "## Many hosts"
DATABASE = "bench_cluster"
PG_PORT, REDIS_PORT, WEB_PORT, SANDBOX_PORT = 5432, 6379, 8000, 9100
WEB_HOSTS = ("web1", "web2")
WORKER_HOSTS = ("worker1", "worker2")
CUT_HOST = "worker2"
SEND_PATH = "/cgi-bin/message/template/send"
# The messages the dead host held: those still in the claim they had at the cut this long afterwards.
HELD_AFTER_CUT_SECONDS = 5.0
PROGRESS_EVERY_SECONDS = 15.0


def reachable(address: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


class ClusterRun:
    """One run: its network, servers and processes, the load, the cut and what it records."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.figures: dict[str, Any] = {"started": datetime.now(UTC), "load_start": load_average()}
        self.scratch = Path(tempfile.mkdtemp(prefix="wxnotify-cluster-"))
        self.scratch.chmod(0o711)  # the postgres user must reach the cluster's directory inside
        self.logs = Path(args.logs).resolve() if args.logs else self.scratch / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.network = Network()
        self.stacks: dict[str, Stack] = {}
        self.pg: ThrowawayPostgres | None = None
        self.abort = threading.Event()
        self.singles_total = int(args.single_rate * args.seconds)

    def run(self) -> dict[str, Any]:
        failed = True
        try:
            self._start()
            self._warm_up()
            self._load_and_cut()
            self._drain()
            self._collect()
            failed = False
            return self.figures
        finally:
            self.abort.set()
            if failed:
                print_log_tails(self.logs)
            for stack in self.stacks.values():
                stack.stop_all()
            if self.pg is not None:
                self.pg.destroy()
            self.network.destroy()
            shutil.rmtree(self.scratch, ignore_errors=True)

    # -- hosts --

    def _host_env(self, name: str) -> dict[str, str]:
        """The shared settings plus the host's own directories: no host sees another's files."""
        own = self.scratch / "hosts" / name
        (own / "metrics").mkdir(parents=True, exist_ok=True)
        return {**self.env, "WXNOTIFY_VAR_DIR": str(own / "var"), "PROMETHEUS_MULTIPROC_DIR": str(own / "metrics")}

    def _start_on(self, host: Host, name: str, argv: list[str]) -> None:
        stack = self.stacks.setdefault(host.name, Stack(self._host_env(host.name)))
        stack.program(name, [*host.wrapper, *argv], log=self.logs / f"{host.name}-{name}.log")

    def _manage(self, host: Host, name: str, *args: str) -> None:
        self._start_on(host, name, [sys.executable, str(MANAGE_PY), *args])

    def _wait_for(self, what: str, ready: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for stack in self.stacks.values():
                stack.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.2)

    def _start(self) -> None:
        from sandbox.demo import DEMO_ACCOUNT

        args, network = self.args, self.network
        network.create()
        hosts = {name: network.add(name) for name in ("db", *WEB_HOSTS, *WORKER_HOSTS, "sandbox")}
        self.hosts = hosts
        log(f"hosts on {network.subnet}: " + ", ".join(f"{h.name} {h.address}" for h in hosts.values()))
        db, sandbox = hosts["db"], hosts["sandbox"]
        self.pg = ThrowawayPostgres(
            self.scratch / "postgres", PG_PORT, host=db.address, wrapper=db.wrapper, clients=str(network.subnet)
        )
        self.pg.init()
        self.pg.start()
        self.pg.create_database(DATABASE)
        self.web_urls = [f"http://{hosts[name].address}:{WEB_PORT}" for name in WEB_HOSTS]
        self.sandbox_url = f"http://{sandbox.address}:{SANDBOX_PORT}"
        env = stack_environment(
            self.pg.url(DATABASE),
            f"redis://{db.address}:{REDIS_PORT}/0",
            SANDBOX_PORT,
            str(self.scratch / "metrics"),
            **API_THROTTLES_RAISED,
        )
        env["DJANGO_ALLOWED_HOSTS"] = ",".join(hosts[name].address for name in WEB_HOSTS)
        env["WECHAT_API_BASE"] = self.sandbox_url
        self.env = env
        redis_dir = self.scratch / "redis"
        redis_dir.mkdir()
        self._start_on(db, "redis", redis_server_argv(REDIS_PORT, redis_dir, host=db.address))
        self._wait_for("Redis", lambda: reachable(db.address, REDIS_PORT))
        setup_django(self._host_env("bench"))
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=0)
        self._manage(
            sandbox,
            "sandbox",
            "wechat_sandbox",
            f"--host={sandbox.address}",
            f"--port={SANDBOX_PORT}",
            f"--followers={args.recipients}",
            f"--latency-ms={args.latency_ms}",
            f"--message-capacity={max(100_000, 2 * (args.recipients + self.singles_total))}",
            f"--callback-url={self.web_urls[1]}/wechat/callback/{{appid}}/",
        )
        self._wait_for("the sandbox", lambda: reachable(sandbox.address, SANDBOX_PORT))
        account = register_account(DEMO_ACCOUNT)
        template_ids = account.templates.filter(is_active=True).values_list("template_id", flat=True)
        self.template_id = next(tid for tid in template_ids if tid.startswith("sandbox-order-shipped"))
        log(f"inserting {args.recipients} followers")
        insert_followers(account, args.recipients)
        self.sessions = ThreadSessions(
            {"Authorization": f"Token {api_token(account)}", "Content-Type": "application/json"}
        )
        for name in WORKER_HOSTS:
            self._manage(hosts[name], "qcluster", "qcluster")
        for name in WEB_HOSTS:
            host = hosts[name]
            self._start_on(
                host,
                "gunicorn",
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "wxnotify.wsgi:application",
                    "--config=gunicorn.conf.py",
                    f"--bind={host.address}:{WEB_PORT}",
                    "--log-level=warning",
                ],
            )
        for url in self.web_urls:
            self._wait_for(f"gunicorn at {url}", lambda url=url: self._api_up(url))

    def _api_up(self, url: str) -> bool:
        try:
            return self.sessions.get().get(f"{url}/api/v1/templates/", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def _sandbox_state(self) -> dict[str, Any]:
        return requests.get(f"{self.sandbox_url}/sandbox/state", timeout=30).json()

    def _sends_by_host(self) -> dict[str, int]:
        """Send requests the sandbox received so far, by host name (an unknown address under itself)."""
        by_source = self._sandbox_state()["requests_by_source"]
        return {self._host_name(source): paths.get(SEND_PATH, 0) for source, paths in by_source.items()}

    def _host_name(self, address: str) -> str:
        """The host of an address; the bridge's is the client's (this process: migrations, the template sync)."""
        if address == self.network.gateway:
            return "client"
        return next((host.name for host in self.hosts.values() if host.address == address), address)

    def _metrics_sends(self) -> dict[str, int]:
        return {name: host_sends_from_metrics(self.scratch / "hosts" / name / "metrics") for name in WORKER_HOSTS}

    # -- load --

    def _warm_up(self) -> None:
        """Connections, lazy imports and the first token, through both web hosts; then the figures count."""
        from messaging.models import Message
        from sandbox.demo import DEMO_APPID
        from sandbox.state import seeded_openid

        self.openids = [seeded_openid(DEMO_APPID, index) for index in range(self.args.recipients)]
        self.run_id = self.network.run_id
        for index in range(min(10, len(self.openids))):
            body = message_body(DEMO_APPID, self.template_id, self.openids[index], f"warm-{self.run_id}-{index}")
            url = self.web_urls[index % len(self.web_urls)]
            response = self.sessions.get().post(f"{url}/api/v1/messages/", data=json.dumps(body), timeout=10)
            response.raise_for_status()
        self._wait_for("the warm-up's sends", lambda: not Message.objects.filter(status__in=UNFINISHED).exists())
        self.figures["sends_before"] = self._sends_by_host()
        self.figures["metrics_before"] = self._metrics_sends()

    def _load_and_cut(self) -> None:
        from messaging.models import Message
        from sandbox.demo import DEMO_APPID

        args = self.args
        bodies = []
        for index in range(self.singles_total):
            cmid = f"cluster-{self.run_id}-{index}"
            openid = self.openids[index % len(self.openids)]
            bodies.append((cmid, json.dumps(message_body(DEMO_APPID, self.template_id, openid, cmid)).encode()))
        urls = [f"{url}/api/v1/messages/" for url in self.web_urls]
        self.stream = SingleStream(urls, self.sessions, bodies, args.single_rate, self.abort)
        t0 = self.figures["t0"] = time.time()
        log(f"campaign of {args.recipients} via web1, then {self.singles_total} singles at {args.single_rate:g}/s")
        campaign = {
            "account": DEMO_APPID,
            "template_id": self.template_id,
            "data": TEMPLATE_DATA,
            "recipients": {"openids": self.openids},
            "name": "cluster run",
        }
        response = self.sessions.get().post(f"{self.web_urls[0]}/api/v1/campaigns/", json=campaign, timeout=300)
        if response.status_code != 202:
            raise RuntimeError(f"campaign refused: HTTP {response.status_code} {response.text[:300]}")
        self.figures["campaign"] = {"id": response.json()["id"], "accept_seconds": time.time() - t0}
        self.stream.start()
        before = sum(self.figures["sends_before"].values())
        threshold = args.cut_at * (args.recipients + self.singles_total)
        next_progress = time.time() + PROGRESS_EVERY_SECONDS
        while True:
            sends = self._sends_by_host()
            if sum(sends.values()) - before >= threshold and sends.get(CUT_HOST, 0) > self.figures["sends_before"].get(
                CUT_HOST, 0
            ):
                break
            if time.time() - t0 > args.drain_timeout:
                raise RuntimeError(f"{args.cut_at:.0%} of the sends did not reach the sandbox in time")
            if time.time() >= next_progress:
                self._progress()
                next_progress += PROGRESS_EVERY_SECONDS
            for stack in self.stacks.values():
                stack.check_alive()
            time.sleep(0.2)
        held = with_database(
            lambda: list(
                Message.objects.filter(status="sending").values_list("pk", "claim_token", "touser", "client_msg_id")
            )
        )
        cut_at = time.time()
        killed = self.hosts[CUT_HOST].kill_all()
        for child in list(self.stacks[CUT_HOST].children):
            child.process.wait()
        self.stacks[CUT_HOST].children.clear()
        log(f"cut {CUT_HOST} off: {killed} processes killed with SIGKILL ({len(held)} messages sending)")
        time.sleep(HELD_AFTER_CUT_SECONDS)
        still = set(
            with_database(
                lambda: list(
                    Message.objects.filter(pk__in=[row[0] for row in held], status="sending").values_list(
                        "pk", "claim_token"
                    )
                )
            )
        )
        self.figures["cut"] = {
            "at": cut_at,
            "processes": killed,
            "sending": len(held),
            "dead_held": [row for row in held if (row[0], row[1]) in still],
            "sends_at_cut": self._sends_by_host(),
        }
        while self.stream.thread.is_alive():
            time.sleep(0.5)
            if time.time() >= next_progress:
                self._progress()
                next_progress += PROGRESS_EVERY_SECONDS
        self.figures["load_end"] = time.time()
        log(f"load done: {self.stream.accepted()} of {self.singles_total} singles accepted; draining")

    def _progress(self) -> None:
        counts = with_database(status_counts)
        log(f"t={time.time() - self.figures['t0']:.0f}s " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items())))

    def _drain(self) -> None:
        from messaging.models import Message

        deadline = time.time() + self.args.drain_timeout
        while with_database(lambda: Message.objects.filter(status__in=UNFINISHED).exists()):
            if time.time() > deadline:
                log(f"not drained after {self.args.drain_timeout:.0f} s")
                self.figures["drained_at"] = None
                return
            time.sleep(0.5)
        self.figures["drained_at"] = time.time()

    def _collect(self) -> None:
        from messaging.models import Campaign, Message
        from sandbox.demo import DEMO_APPID

        time.sleep(2)  # the last receipts
        columns = ("pk", "client_msg_id", "touser", "campaign_id", "status")
        self.figures["rows"] = [dict(zip(columns, row, strict=True)) for row in Message.objects.values_list(*columns)]
        self.figures["campaign_recipients"] = Campaign.objects.get(pk=self.figures["campaign"]["id"]).recipient_count
        self.figures["unfinished"] = Message.objects.filter(status__in=UNFINISHED).count()
        state = self._sandbox_state()
        self.figures["token_fetches"] = state["accounts"][DEMO_APPID]["token_fetches"]
        self.figures["requests_by_host"] = {
            self._host_name(s): paths for s, paths in state["requests_by_source"].items()
        }
        self.figures["sends_after"] = self._sends_by_host()
        params = {"appid": DEMO_APPID, "since": self.figures["t0"]}
        self.figures["sends"] = requests.get(f"{self.sandbox_url}/sandbox/sends", params=params, timeout=120).json()[
            "sends"
        ]
        self.figures["metrics_sends"] = self._metrics_sends()
        self.figures["singles"] = Counter(request.outcome for request in self.stream.requests)
        self.figures["accepted_singles"] = [r.client_msg_id for r in self.stream.requests if r.status is not None]
        self.figures.update(ended=time.time(), load_end_average=load_average(), code=this_tree())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=20_000, help="campaign size (followers inserted)")
    parser.add_argument(
        "--single-rate", type=float, default=20.0, help="single sends per second, web1 and web2 in turn"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the single sends go on")
    parser.add_argument("--latency-ms", type=int, default=20, help="sandbox's delay before answering a send")
    parser.add_argument("--cut-at", type=float, default=0.4, help="share of the expected sends before the cut")
    parser.add_argument("--drain-timeout", type=float, default=600.0, help="longest wait for the drain")
    parser.add_argument("--no-results", action="store_true", help="print only, do not write bench/RESULTS.md")
    parser.add_argument("--json", help="also write the verdicts and figures to this JSON file")
    parser.add_argument("--logs", help="keep the hosts' logs in this directory (default: removed after the run)")
    args = parser.parse_args()
    if args.recipients < 10 or args.single_rate <= 0 or args.seconds <= 0 or not 0 < args.cut_at < 1:
        parser.error("--recipients ≥ 10, --single-rate and --seconds > 0, 0 < --cut-at < 1")
    reason = unavailable_reason()
    if reason:
        parser.error(reason)
    command = shlex.join([os.path.relpath(sys.executable, Path.cwd()), *sys.argv])
    # SIGTERM unwinds like Ctrl-C, through run()'s clean-up of every process, server and namespace.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    figures = ClusterRun(args).run()
    found = verdicts(figures, args, cut_host=CUT_HOST, worker_hosts=WORKER_HOSTS, deliveries=DELIVERIES)
    text = report(figures, found, args, command=command, title=SECTION_TITLE, python=platform.python_version())
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(found, indent=2, default=str), encoding="utf-8")
    if not args.no_results:
        write_results_section(SECTION_TITLE, text)
    return 0 if found["ok"] else 1


if __name__ == "__main__":
    os.chdir(BASE_DIR)
    sys.exit(main())
