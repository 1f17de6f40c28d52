"""Measure how many template sends per second a running sandbox answers.

    python -m sandbox.loadcheck --base-url http://127.0.0.1:9100 --threads 64 --seconds 10

Each thread keeps one keep-alive ``requests`` session, the way a sender's connection pool does, and
sends to the demo account's seeded followers.  Run the sandbox in its own process
(``manage.py wechat_sandbox --no-receipts``) so the two do not share one interpreter lock.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter

import requests

from sandbox.demo import DEMO_ACCOUNT, DEMO_APPID, DEMO_TEMPLATES
from sandbox.state import seeded_openid


def run(base_url: str, threads: int, seconds: float) -> dict[str, object]:
    token = requests.post(
        f"{base_url}/cgi-bin/stable_token",
        json={"grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_ACCOUNT["secret"]},
        timeout=10,
    ).json()["access_token"]
    openids = [seeded_openid(DEMO_APPID, n) for n in range(10)]
    data = {
        "character_string1": {"value": "SO20261128001"},
        "thing2": {"value": "机械键盘"},
        "time3": {"value": "2026年11月28日 10:30"},
        "amount4": {"value": "¥399.00"},
    }
    url = f"{base_url}/cgi-bin/message/template/send?access_token={token}"
    results: Counter[int] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)
    deadline = 0.0

    def worker(number: int) -> None:
        local: Counter[int] = Counter()
        local_latencies = []
        with requests.Session() as session:
            start.wait()
            sent = 0
            while time.monotonic() < deadline:
                payload = {
                    "touser": openids[(number + sent) % len(openids)],
                    "template_id": DEMO_TEMPLATES[0]["template_id"],
                    "data": data,
                }
                began = time.monotonic()
                reply = session.post(url, data=json.dumps(payload, ensure_ascii=False).encode("utf-8"), timeout=30)
                local_latencies.append(time.monotonic() - began)
                local[reply.json()["errcode"]] += 1
                sent += 1
        with lock:
            results.update(local)
            latencies.extend(local_latencies)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    deadline = time.monotonic() + seconds
    began = time.monotonic()
    start.wait()
    for thread in pool:
        thread.join()
    elapsed = time.monotonic() - began
    latencies.sort()
    total = sum(results.values())
    return {
        "threads": threads,
        "requests": total,
        "per_second": round(total / elapsed),
        "errcodes": dict(results),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:9100")
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    print(json.dumps(run(args.base_url, args.threads, args.seconds)))


if __name__ == "__main__":
    main()
