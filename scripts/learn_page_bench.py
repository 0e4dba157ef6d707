"""Measure the Learn page in Chromium: how fast a net trains while the page draws it.

    python scripts/learn_page_bench.py [--nets 16 64,64] [--seconds 20] [--url URL] [--json]

Starts `mlp learn` on a free port of 127.0.0.1 (or uses --url, a running server's /learn: an
older version, to compare in the same sitting), opens the page in Debian's Chromium (through
Playwright), and for each net: types its hidden layers, presses Reset, then Play, and for
--seconds reads the page's own state: steps a second, frames a second drawn, and the seconds
from Play to 90% validation accuracy. Only the page's controls and ``window.learn.state`` are
used, so that any version of the page can be measured.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time


def measure(page, url: str, hidden: str, seconds: float) -> dict:
    page.goto(url)
    _wait(page, "window.learn.state !== null && !window.learn.busy")
    page.fill("#hidden", hidden)
    page.click("#reset")
    _wait(page, f"window.learn.state.config.hidden.join(',') === '{hidden}'")
    began = time.monotonic()
    page.click("#play")
    reached, last_step, drawn = None, 0, []
    while time.monotonic() - began < seconds:
        state = page.evaluate(
            "(() => { const s = window.learn.state, a = s.history.val_acc.filter(v => v !== null);"
            " return [s.step, a.length ? a[a.length - 1] : 0]; })()"
        )
        if state[0] != last_step:
            drawn.append(time.monotonic())
            last_step = state[0]
        if reached is None and state[1] >= 0.9:
            reached = time.monotonic() - began
        time.sleep(0.01)
    elapsed = time.monotonic() - began
    page.click("#play")
    _wait(page, "!window.learn.busy")
    return {
        "hidden": hidden,
        "steps_per_second": round(last_step / elapsed, 1),
        "states_drawn_per_second": round(len(drawn) / elapsed, 1),
        "seconds_to_90": None if reached is None else round(reached, 2),
    }


def _wait(page, expression: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(expression)
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=["16", "64,64"])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--url", help="a running server's /learn page")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    proc = None
    url = args.url
    if url is None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mnist_mlp", "learn", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        match = re.search(r"(http://\S+/learn)", proc.stdout.readline())
        if not match:
            print("mlp learn did not start", file=sys.stderr)
            return 1
        url = match.group(1)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            rows = [measure(page, url, net, args.seconds) for net in args.nets]
            browser.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(
                f"{r['hidden']:>6}: {r['steps_per_second']:7.1f} steps/s, "
                f"{r['states_drawn_per_second']:5.1f} states drawn/s, "
                f"90% after {r['seconds_to_90']} s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
