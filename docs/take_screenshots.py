"""Screenshots of the Dagster UI after a 3-day backfill of the demo, for the README.

    .venv/bin/python docs/take_screenshots.py            # writes docs/screenshots/*.png

Runs the demo for 3 days (`python -m dify_pipeline_dev.demo --days 3`), starts `dagster-webserver` on loopback on the
demo's instance, and drives headless Chromium (Debian: `apt-get install -y chromium`) through its DevTools
protocol: open a page, wait until the UI has loaded its data, capture the viewport.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
# file name → (page of the UI, what to click there in order, the heading to scroll to)
PAGES = {
    "enriched_tickets_overview": ("/assets/enriched_tickets?view=overview", [], None),
    "enriched_tickets_plots": ("/assets/enriched_tickets?view=overview", ["Plots"], "Metadata"),
    "enriched_tickets_checks": ("/assets/enriched_tickets?view=checks", ["failure_rate_below_threshold"], None),
    "enriched_tickets_check_partitions": (
        "/assets/enriched_tickets?view=checks", ["failure_rate_below_threshold", "Partitions"], None),
    "tickets_parquet_checks": ("/assets/tickets_parquet?view=checks", ["parquet_matches_enriched"], None),
    "tickets_parquet_partitions": ("/assets/tickets_parquet?view=partitions", [], None),
}
# Clicks the innermost element showing exactly `text` (the last one: a page's own controls come after its tabs).
CLICK = """(text => {
  const all = [...document.querySelectorAll('body *')].filter(e => e.textContent.trim() === text && e.offsetParent);
  const inner = all.filter(e => ![...e.children].some(c => c.textContent.trim() === text));
  if (!inner.length) return false;
  inner[inner.length - 1].click();
  return true;
})"""
SCROLL = """(text => {
  const all = [...document.querySelectorAll('body *')].filter(e => e.textContent.trim() === text && e.offsetParent);
  if (!all.length) return false;
  all[all.length - 1].scrollIntoView({block: 'start'});
  return true;
})"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class Browser:
    """Headless Chromium, one tab, driven over the DevTools protocol."""

    def __init__(self, width: int, height: int):
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--remote-debugging-port={self.port}", f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(f"http://127.0.0.1:{self.port}/json/version", 30)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list") as response:
            [tab] = [t for t in json.load(response) if t["type"] == "page"]
        self.socket = connect(tab["webSocketDebuggerUrl"], max_size=None).__enter__()  # closed in close()
        self.ids = itertools.count(1)
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params) -> dict:
        number = next(self.ids)
        self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def settle(self, seconds: float) -> None:
        """Until the document is complete and no spinner is left (the UI fetches its data after loading)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(1)
            if self.evaluate("document.readyState") == "complete" and not self.evaluate(
                    "document.querySelectorAll('[role=progressbar], .bp5-spinner, [data-testid=spinner]').length"):
                break
        time.sleep(seconds)  # charts animate in

    def click(self, text: str) -> None:
        if not self.evaluate(f"{CLICK}({json.dumps(text)})"):
            raise RuntimeError(f"nothing shows {text!r} on {self.evaluate('location.href')}")
        self.settle(1)

    def screenshot(self, url: str, clicks: list[str], scroll_to: str | None, path: Path) -> None:
        self.call("Page.navigate", url=url)
        self.settle(2)
        if self.evaluate(f"{CLICK}('Skip')"):  # the community dialog of a new browser profile
            self.settle(1)
        for text in clicks:
            self.click(text)
        if scroll_to:
            self.evaluate(f"{SCROLL}({json.dumps(scroll_to)})")
            self.settle(2)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.socket.close()
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)
        shutil.rmtree(self.profile, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(REPO / "docs" / "screenshots"), help="folder for the PNG files")
    parser.add_argument("--demo", default=str(REPO / "demo_output" / "screenshots"), help="the demo's folder")
    parser.add_argument("--tickets", type=int, default=1500, help="tickets per day")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args()
    output, demo = Path(args.output), Path(args.demo)
    output.mkdir(parents=True, exist_ok=True)

    # The second day's app fails the refund tickets: that day is blocked, the others published.
    subprocess.run([str(BIN / "python"), "-m", "dify_pipeline_dev.demo", "--days", "3", "--block-day", "2",
                    "--tickets", str(args.tickets), "--output", str(demo)], cwd=REPO)
    env = {**os.environ, **dict(line.split("=", 1) for line in (demo / "demo.env").read_text().splitlines())}
    port = free_port()
    webserver = subprocess.Popen(
        [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    browser = None
    try:
        wait_for(f"http://127.0.0.1:{port}/server_info", 120)
        browser = Browser(args.width, args.height)
        for name, (page, clicks, scroll_to) in PAGES.items():
            path = output / f"{name}.png"
            browser.screenshot(f"http://127.0.0.1:{port}{page}", clicks, scroll_to, path)
            print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    finally:
        if browser:
            browser.close()
        os.killpg(webserver.pid, signal.SIGTERM)
        webserver.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
