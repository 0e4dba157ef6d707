"""Measure `mlp learn` on this machine: training speed, the state's size, and 8 sessions at once.

    python scripts/learn_bench.py [--seconds 10] [--json]

Starts `mlp learn` on a free port of 127.0.0.1 and, over its JSON API:

- one session of the default net (784-16-10, sigmoid, lr 0.5, batch 32, seed 0) trained in
  requests of 10,000 steps that ask for nothing else: steps per second;
- the same, asking for the whole state every 40 steps, as the page does while it plays: steps
  and seconds to 90% validation accuracy, and the state's size in bytes;
- 8 sessions playing at once, each from its own thread, for ``--seconds``: their steps per
  second and the server's memory (VmRSS) before and after; then a 9th session, which must be
  refused with 429.

Every request goes to loopback only, and the number of requests is bounded by time.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time

import httpx


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnist_mlp", "learn", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"(http://\S+/)learn", line)
        if not match:
            print(f"mlp learn did not start: {line}{proc.stdout.read()}", file=sys.stderr)
            return 1
        url = match.group(1)
        out = run(url, proc.pid, args.seconds)
    finally:
        proc.terminate()
        proc.wait(10)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for key, value in out.items():
            print(f"{key:<36} {value}")
    return 0


def run(url: str, pid: int, seconds: float) -> dict:
    client = httpx.Client(base_url=url, timeout=60)
    out: dict = {"rss_idle_mb": round(rss_mb(pid), 1)}
    key = client.post("api/learn", json={}).json()["id"]
    started = time.perf_counter()
    client.post(f"api/learn/{key}/step", json={"steps": 10_000})
    out["steps_per_s_alone"] = round(10_000 / (time.perf_counter() - started))
    client.delete(f"api/learn/{key}")

    state = client.post("api/learn", json={}).json()
    key, started, accuracy = state["id"], time.perf_counter(), 0.0
    while accuracy < 0.9 and time.perf_counter() - started < 120:
        response = client.post(f"api/learn/{key}/step", json={"steps": 40})
        state = response.json()
        measured = [a for a in state["history"]["val_acc"] if a is not None]
        accuracy = measured[-1] if measured else 0.0
    out["steps_to_90pct"] = state["step"]
    out["seconds_to_90pct"] = round(time.perf_counter() - started, 2)
    out["state_bytes"] = len(response.content)
    client.delete(f"api/learn/{key}")

    keys = [client.post("api/learn", json={"seed": i}).json()["id"] for i in range(8)]
    steps = [0] * 8
    stop = time.perf_counter() + seconds

    def play(i: int) -> None:
        c = httpx.Client(base_url=url, timeout=60)
        while time.perf_counter() < stop:
            steps[i] = c.post(f"api/learn/{keys[i]}/step", json={"steps": 40}).json()["step"]

    threads = [threading.Thread(target=play, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["eight_sessions_steps_per_s_each"] = [round(s / seconds) for s in steps]
    out["rss_with_8_sessions_mb"] = round(rss_mb(pid), 1)
    ninth = client.post("api/learn", json={})
    out["ninth_session"] = f"{ninth.status_code} {ninth.json().get('error', '')}"
    return out


if __name__ == "__main__":
    sys.exit(main())
