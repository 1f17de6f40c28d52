"""``manage.py wechat_sandbox`` starts, answers WeChat calls and exits cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from sandbox.demo import DEMO_ACCOUNT, DEMO_APPID, demo_config
from tests.servers import free_port

MANAGE_PY = Path(__file__).resolve().parents[2] / "manage.py"


def start_sandbox(*args: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(MANAGE_PY), "wechat_sandbox", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = process.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if match is None:
        process.kill()
        pytest.fail(f"sandbox did not start: {line!r} {process.stderr.read()!r}")
    return process, match.group(1)


def token(base_url: str, appid: str = DEMO_APPID, secret: str = DEMO_ACCOUNT["secret"]) -> dict:
    params = {"grant_type": "client_credential", "appid": appid, "secret": secret}
    return requests.get(f"{base_url}/cgi-bin/token", params=params, timeout=5).json()


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_command_serves_the_demo_account_until_signalled(stop_signal):
    port = free_port()
    process, base_url = start_sandbox(
        "--port", str(port), "--followers", "12", "--token-ttl", "60", "--latency-ms", "1",
        "--user-latency-ms", "2", "--no-receipts", "--callback-url", "http://127.0.0.1:8000/wechat/callback/{appid}/",
    )  # fmt: skip
    try:
        assert base_url == f"http://127.0.0.1:{port}"
        assert token(base_url)["expires_in"] == 60
        state = requests.get(f"{base_url}/sandbox/state", timeout=5).json()
        account = state["accounts"][DEMO_APPID]
        assert account["followers"] == 12 + 6
        assert account["callback_url"] == f"http://127.0.0.1:8000/wechat/callback/{DEMO_APPID}/"
        assert state["faults"]["receipts"] is False
        assert state["faults"]["latency_ms"] == 1
        assert state["faults"]["user_latency_ms"] == 2
    finally:
        process.send_signal(stop_signal)
        assert process.wait(timeout=10) == 0
        process.stdout.close()
        process.stderr.close()


@pytest.mark.slow
def test_command_reads_a_config_file(tmp_path):
    config = demo_config(appid="wx00000000000000cc", secret="config-file-secret", followers=3)
    config["faults"] = {"error_rate": 1.0, "error_code": 45011}
    path = tmp_path / "sandbox.json"
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    process, base_url = start_sandbox("--port", str(free_port()), "--config", str(path), "--error-code", "43117")
    try:
        assert token(base_url)["errcode"] == 40013
        reply = token(base_url, appid="wx00000000000000cc", secret="config-file-secret")
        assert reply["expires_in"] == 7200
        faults = requests.get(f"{base_url}/sandbox/state", timeout=5).json()["faults"]
        assert (faults["error_rate"], faults["error_code"]) == (1.0, 43117)
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        process.stdout.close()
        process.stderr.close()


def test_the_shipped_demo_config_matches_the_demo_account():
    shipped = json.loads((Path(__file__).resolve().parents[2] / "sandbox" / "demo.json").read_text("utf-8"))
    assert shipped["accounts"] == demo_config()["accounts"]


@pytest.mark.slow
def test_command_takes_the_delivery_fault_options():
    process, base_url = start_sandbox(
        "--port", str(free_port()), "--followers", "3", "--no-receipts", "--drop-reply-rate", "0.05",
        "--drop-reply-mode", "mixed", "--drop-reply-hang-ms", "1500", "--dedupe-window-s", "90",
        "--message-capacity", "2", "--bizsend-without-msgid", "--sent-event-error-code", "10005",
    )  # fmt: skip
    try:
        faults = requests.get(f"{base_url}/sandbox/state", timeout=5).json()["faults"]
        assert (faults["bizsend_msgid"], faults["sent_event_error_code"]) == (False, 10005)
        assert (faults["drop_reply_rate"], faults["drop_reply_mode"]) == (0.05, "mixed")
        assert (faults["drop_reply_hang_ms"], faults["dedupe_window_s"]) == (1500, 90.0)
        requests.post(f"{base_url}/sandbox/faults", json={"drop_reply_rate": 0}, timeout=5).raise_for_status()
        access_token = token(base_url)["access_token"]
        # Three sends (refused: unknown recipient) and a capacity of two: the log keeps the last two.
        for index in range(3):
            requests.post(
                f"{base_url}/cgi-bin/message/template/send",
                params={"access_token": access_token},
                json={"touser": "o", "template_id": "t", "data": {}, "client_msg_id": f"c{index}"},
                timeout=5,
            )
        sends = requests.get(f"{base_url}/sandbox/sends", timeout=5).json()["sends"]
        assert [(s["client_msg_id"], s["errcode"]) for s in sends] == [("c1", 40003), ("c2", 40003)]
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        process.stdout.close()
        process.stderr.close()
