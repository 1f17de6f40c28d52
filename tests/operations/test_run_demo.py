"""``manage.py run_demo`` for real: child processes, ports, a login with the printed password, signals.

The demo runs in a subprocess on the embedded default (SQLite in a temporary var dir, database cache,
ORM broker) whatever DATABASE_URL/REDIS_URL this test run has, so it never migrates or writes to a
shared database.  Each test takes a few seconds: they start real servers.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from operations.management.commands.run_demo import port_is_open
from sandbox.demo import DEMO_TEMPLATES
from tests.servers import free_port

BASE_DIR = Path(__file__).resolve().parents[2]
READY_LINE = "Press Ctrl-C to stop everything."
START_TIMEOUT = 45.0
DEMO_TITLES = [template["title"] for template in DEMO_TEMPLATES]

pytestmark = pytest.mark.slow


class Demo:
    """A running ``run_demo`` process whose combined output goes to a file (a pipe could fill and block)."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.output_path = tmp_path / "demo.log"
        # Not this test run's services, nor its inline tasks and unreachable WeChat (tests/settings.py).
        ignored = {"DATABASE_URL", "REDIS_URL", "WXNOTIFY_TASKS_SYNC", "WECHAT_API_BASE"}
        env = {key: value for key, value in os.environ.items() if key not in ignored}
        env.update(
            DJANGO_SETTINGS_MODULE="wxnotify.settings",
            DJANGO_DEBUG="1",
            WXNOTIFY_VAR_DIR=str(tmp_path / "var"),
            WXNOTIFY_Q_WORKERS="1",
            PYTHONUNBUFFERED="1",
        )
        with self.output_path.open("wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, str(BASE_DIR / "manage.py"), "run_demo", "--verbosity=0", *args],
                cwd=BASE_DIR,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def output(self) -> str:
        return self.output_path.read_text(encoding="utf-8", errors="replace")

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while READY_LINE not in self.output:
            if self.process.poll() is not None:
                pytest.fail(f"run_demo exited with {self.process.returncode} before it was ready:\n{self.output}")
            if time.monotonic() > deadline:
                pytest.fail(f"run_demo not ready after {START_TIMEOUT} s:\n{self.output}")
            time.sleep(0.1)

    def child_pids(self) -> dict[str, int]:
        return {
            name: int(pid) for name, pid in re.findall(r"^\s+(sandbox|web|qcluster)\s+pid (\d+)", self.output, re.M)
        }

    def cleanup(self) -> None:
        """Leave nothing behind if a test failed half-way (each child leads its own process group)."""
        for pid in self.child_pids().values():
            if process_group_alive(pid):
                os.killpg(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def start_demo(tmp_path) -> Iterator:
    demos: list[Demo] = []

    def start(*args: str) -> Demo:
        demo = Demo(tmp_path, *args)
        demos.append(demo)
        return demo

    yield start
    for demo in demos:
        demo.cleanup()


def test_demo_serves_admin_with_printed_login_and_stops_cleanly_on_sigint(start_demo):
    web_port, sandbox_port = free_port(), free_port()
    demo = start_demo(f"--port={web_port}", f"--sandbox-port={sandbox_port}", "--followers=20")
    demo.wait_until_ready()

    output = demo.output
    assert f"Log in:    http://127.0.0.1:{web_port}/admin/" in output
    assert f"WeChat API base: http://127.0.0.1:{sandbox_port}" in output
    password = re.search(r"Password:\s+(\S+)", output).group(1)
    pids = demo.child_pids()
    assert set(pids) == {"sandbox", "web", "qcluster"}
    sandbox_state = requests.get(f"http://127.0.0.1:{sandbox_port}/sandbox/state", timeout=10).json()
    demo_account = sandbox_state["accounts"]["wxdeadbeef00000001"]
    assert demo_account["callback_url"] == f"http://127.0.0.1:{web_port}/wechat/callback/wxdeadbeef00000001/"

    session = requests.Session()
    login_url = f"http://127.0.0.1:{web_port}/admin/login/"
    page = session.get(login_url, timeout=10)
    assert page.status_code == 200
    logged_in = session.post(
        login_url,
        data={
            "username": "admin",
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        headers={"Referer": login_url},
        timeout=10,
    )
    assert logged_in.status_code == 200
    assert logged_in.url == f"http://127.0.0.1:{web_port}/admin/"

    # Ready to send from the first page: the templates are there and the followers arrive through the workers.
    assert f"Console:   http://127.0.0.1:{web_port}/console/" in output
    assert "Demo account wxdeadbeef00000001: 4 template(s)" in output
    assert "2 subscription template(s) (2 created" in output
    subscriptions = session.get(
        f"http://127.0.0.1:{web_port}/admin/templates_app/subscriptiontemplate/", timeout=10
    ).text
    assert "订单发货通知" in subscriptions and "预约挂号成功通知" in subscriptions
    templates = session.get(f"http://127.0.0.1:{web_port}/admin/templates_app/messagetemplate/", timeout=10).text
    assert all(title in templates for title in DEMO_TITLES)
    followers_url = f"http://127.0.0.1:{web_port}/admin/accounts/follower/"
    listed = demo_account["followers"]
    deadline = time.monotonic() + 30
    while f"{listed} followers" not in session.get(followers_url, headers={"Accept-Language": "en"}, timeout=10).text:
        assert time.monotonic() < deadline, f"the demo's follower sync did not bring the sandbox's {listed} followers"
        time.sleep(0.5)

    demo.process.send_signal(signal.SIGINT)

    assert demo.process.wait(timeout=20) == 0, demo.output
    assert "Demo stopped; all processes have exited." in demo.output
    for name, pid in pids.items():
        assert not process_group_alive(pid), f"{name} (pid {pid}) or a process it started is still running"
    assert not port_is_open(web_port)
    assert not port_is_open(sandbox_port)


def test_demo_stops_everything_and_fails_when_a_child_dies(start_demo):
    web_port = free_port()
    demo = start_demo(f"--port={web_port}", "--no-sandbox")
    demo.wait_until_ready()
    pids = demo.child_pids()
    assert set(pids) == {"web", "qcluster"}

    os.kill(pids["qcluster"], signal.SIGKILL)

    assert demo.process.wait(timeout=20) != 0
    assert f"The qcluster process (pid {pids['qcluster']}) exited unexpectedly with code -9" in demo.output
    assert not process_group_alive(pids["web"])
    assert not process_group_alive(pids["qcluster"])
    assert not port_is_open(web_port)
