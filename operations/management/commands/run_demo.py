"""``manage.py run_demo``: the whole service on one machine, talking to the WeChat sandbox.

One command gives a newcomer a working system: a migrated database, an admin login, the demo
official account, and the three processes production runs (web, qcluster, and — standing in for
api.weixin.qq.com — the sandbox), all sharing one environment so the web and the workers send to the
sandbox.  The children run in process groups of their own so that Ctrl-C reaches only this
supervisor, which then stops them in order and waits for each (qcluster's workers included).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.test.utils import override_settings

from audit.context import acting_as

MANAGE_PY = Path(settings.BASE_DIR) / "manage.py"
DEMO_USERNAME = "admin"
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.2


@dataclass
class Child:
    """A supervised child process and the port that shows it is up (None: nothing to wait for)."""

    name: str
    process: subprocess.Popen
    port: int | None = None


class Command(BaseCommand):
    help = "Run the demo: migrate, create an admin, register the demo account, start sandbox + web + qcluster."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--port",
            type=int,
            default=int(os.environ.get("PORT", "8000")),
            help="Web port (default: $PORT or 8000).",
        )
        parser.add_argument("--sandbox-port", type=int, default=9100, help="WeChat sandbox port (default: 9100).")
        parser.add_argument("--followers", type=int, default=200, help="Followers the sandbox invents (default: 200).")
        parser.add_argument(
            "--no-sandbox",
            action="store_true",
            help="Do not start the sandbox or register the demo account; use WECHAT_API_BASE as it is.",
        )

    def handle(self, *args, **options) -> None:
        port: int = options["port"]
        sandbox_port: int = options["sandbox_port"]
        verbosity: int = options["verbosity"]
        demo_account = None
        if not options["no_sandbox"]:
            from sandbox.demo import DEMO_ACCOUNT

            demo_account = DEMO_ACCOUNT
        commands = self.plan_children(port, sandbox_port, options["followers"], demo_account)
        for busy in (
            child_port for _, _, child_port in commands if child_port is not None and port_is_open(child_port)
        ):
            raise CommandError(f"Port {busy} is already in use; choose another with --port / --sandbox-port.")

        env = os.environ.copy()
        env["PYTHONUNBUFFERED"] = "1"
        # The callback URL shown to admins (and printed by add_official_account) must point at this web port.
        env.setdefault("WXNOTIFY_PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")
        if demo_account is not None:
            env["WECHAT_API_BASE"] = f"http://127.0.0.1:{sandbox_port}"

        call_command("migrate", interactive=False, verbosity=verbosity)
        # Metric files of an earlier run would be summed into this run's counters.
        call_command("clear_metrics", verbosity=verbosity)
        with acting_as("manage.py run_demo"):
            password = self.reset_demo_superuser()
            if demo_account is not None:
                with override_settings(WXNOTIFY_PUBLIC_BASE_URL=env["WXNOTIFY_PUBLIC_BASE_URL"].rstrip("/")):
                    self.register_demo_account(demo_account, verbosity)

        stop_requested: list[int] = []

        def request_stop(signum: int, frame: FrameType | None) -> None:
            stop_requested.append(signum)

        previous_handlers = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        children: list[Child] = []
        try:
            for name, argv, child_port in commands:
                children.append(Child(name, self.spawn(argv, env), child_port))
            failure = self.wait_until_ready(children, stop_requested)
            if failure is None and not stop_requested:
                api_base = env.get("WECHAT_API_BASE", settings.WECHAT_API_BASE)
                if demo_account is not None:
                    self.sync_demo_account(demo_account["appid"], api_base)
                self.print_banner(children, port, password, api_base)
                failure = self.supervise(children, stop_requested)
        finally:
            self.stop_all(children)
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
        if failure is not None:
            raise CommandError(failure)
        self.stdout.write("Demo stopped; all processes have exited.")

    def plan_children(
        self, port: int, sandbox_port: int, followers: int, demo_account: dict | None
    ) -> list[tuple[str, list[str], int | None]]:
        """Name, manage.py arguments and readiness port of each child, in start order."""
        commands: list[tuple[str, list[str], int | None]] = []
        if demo_account is not None:
            callback_url = f"http://127.0.0.1:{port}/wechat/callback/{demo_account['appid']}/"
            sandbox_argv = [
                "wechat_sandbox",
                f"--port={sandbox_port}",
                f"--followers={followers}",
                f"--callback-url={callback_url}",
            ]
            commands.append(("sandbox", sandbox_argv, sandbox_port))
        commands.append(("web", ["runserver", f"127.0.0.1:{port}", "--noreload"], port))
        commands.append(("qcluster", ["qcluster"], None))
        return commands

    def reset_demo_superuser(self) -> str:
        """Create the demo admin, or give the existing one a fresh password, and return that password.

        A new random password on every run means a demo left running on a shared host is never
        protected by a well-known password.
        """
        password = secrets.token_urlsafe(12)
        user_model = get_user_model()
        user = user_model.objects.filter(username=DEMO_USERNAME).first()
        if user is None:
            user_model.objects.create_superuser(DEMO_USERNAME, email="", password=password)
        else:
            user.is_active = user.is_staff = user.is_superuser = True
            user.set_password(password)
            user.save()
        return password

    def register_demo_account(self, account: dict[str, str], verbosity: int) -> None:
        """Create or update the sandbox's official account through the same command admins use."""
        call_command(
            "add_official_account",
            appid=account["appid"],
            secret=account["secret"],
            token=account["token"],
            aes_key=account["encoding_aes_key"],
            mode=account["mode"],
            name=account.get("name", "Demo (sandbox)"),
            verbosity=verbosity,
        )

    def sync_demo_account(self, appid: str, api_base: str) -> None:
        """Fetch the demo account's templates (message and subscription templates) and queue its follower sync, as an
        admin's first clicks would,
        so the console and the API can send as soon as the banner appears.  A failure is reported, not fatal: the
        admin actions can repeat either step."""
        from accounts.models import OfficialAccount
        from accounts.services import queue_follower_sync
        from templates_app.services import sync_subscription_templates, sync_templates
        from wxnotify.wechat.errors import WeChatError, describe_wechat_error

        account = OfficialAccount.objects.get(appid=appid)
        try:
            # Tasks run inline when WXNOTIFY_TASKS_SYNC is set, so the follower sync may run here too.
            with override_settings(WECHAT_API_BASE=api_base):
                templates = sync_templates(account)
                subscriptions = sync_subscription_templates(account)
                queue_follower_sync(account)
        except WeChatError as error:
            self.stderr.write(f"Could not sync the demo account: {describe_wechat_error(error)}")
            return
        active = account.templates.filter(is_active=True).count()
        subscribed = account.subscription_templates.filter(is_active=True).count()
        self.stdout.write(
            f"Demo account {appid}: {active} template(s) ({templates}), {subscribed} subscription template(s) "
            f"({subscriptions}); follower sync queued in the workers."
        )

    def spawn(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        # process_group=0: a terminal's Ctrl-C goes to this supervisor only, and killpg() on the
        # child's group also reaches processes it forked (qcluster's workers).
        return subprocess.Popen([sys.executable, str(MANAGE_PY), *argv], env=env, process_group=0)  # noqa: S603

    def wait_until_ready(self, children: list[Child], stop_requested: list[int]) -> str | None:
        """Wait until every child's port accepts connections; return why not, or None when ready."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        waiting = [child for child in children if child.port is not None]
        while waiting and not stop_requested:
            failure = self.find_dead_child(children)
            if failure is not None:
                return failure
            waiting = [child for child in waiting if not port_is_open(child.port)]
            if time.monotonic() > deadline:
                names = ", ".join(f"{child.name} (port {child.port})" for child in waiting)
                return f"Timed out after {STARTUP_TIMEOUT:.0f} s waiting for {names}."
            time.sleep(POLL_INTERVAL)
        return None

    def supervise(self, children: list[Child], stop_requested: list[int]) -> str | None:
        """Block until a stop signal arrives (return None) or a child exits on its own (say which)."""
        while not stop_requested:
            failure = self.find_dead_child(children)
            if failure is not None:
                return failure
            time.sleep(POLL_INTERVAL)
        return None

    def find_dead_child(self, children: list[Child]) -> str | None:
        for child in children:
            code = child.process.poll()
            if code is not None:
                return (
                    f"The {child.name} process (pid {child.process.pid}) exited unexpectedly with code {code}; "
                    "stopped the others."
                )
        return None

    def stop_all(self, children: list[Child]) -> None:
        """Terminate every child, wait for it, and kill its whole process group if it lingers."""
        for child in reversed(children):
            if child.process.poll() is None:
                child.process.terminate()
        for child in reversed(children):
            try:
                child.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.stderr.write(f"The {child.name} process did not stop within {STOP_TIMEOUT:.0f} s; killing it.")
            kill_process_group(child.process.pid)
            child.process.wait()
            if not wait_for_process_group_exit(child.process.pid, STOP_TIMEOUT):
                self.stderr.write(f"Some processes started by {child.name} (group {child.process.pid}) did not exit.")

    def print_banner(self, children: list[Child], port: int, password: str, api_base: str) -> None:
        web = f"http://127.0.0.1:{port}"
        lines = [
            "",
            "wxnotify demo is running.",
            f"  Log in:    {web}/admin/",
            f"  Username:  {DEMO_USERNAME}",
            f"  Password:  {password}",
            f"  Console:   {web}/console/   (send template messages, follow campaigns)",
            f"  API docs:  {web}/api/docs/   (token: manage.py drf_create_token {DEMO_USERNAME})",
            f"  WeChat API base: {api_base}",
            "  Processes:",
        ]
        for child in children:
            where = f" on port {child.port}" if child.port is not None else ""
            lines.append(f"    {child.name:<9} pid {child.process.pid}{where}")
        lines.append("Press Ctrl-C to stop everything.")
        self.stdout.write("\n".join(lines))
        self.stdout.flush()


def port_is_open(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def kill_process_group(pgid: int) -> None:
    """SIGKILL whatever is left in a child's process group (e.g. orphaned workers); fine if none."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return


def wait_for_process_group_exit(pgid: int, timeout: float) -> bool:
    """Wait until no process is left in the group; orphans are reaped by init, so poll rather than wait()."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False
