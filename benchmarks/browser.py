"""A headless Chromium driven over its DevTools protocol: open a page, let it run for a while in real time
(Dask's pages fill in over websockets, which Chromium's ``--screenshot`` does not wait for), and save a
screenshot.  Used by ``dashboard_check.py`` (the screenshots in docs/images) and ``dashboard_overhead.py``
(a page kept open during a run).  Needs Debian's ``chromium`` package and tornado (a dependency of
distributed)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import urllib.request


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("no chromium on PATH (Debian: apt-get install chromium)")


class Browser:
    """A headless Chromium process; :meth:`open` gives a :class:`Tab`."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        self.width, self.height = width, height
        self.profile = tempfile.mkdtemp(prefix="bragg-chromium-")
        self.proc = subprocess.Popen(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.port = None
        for line in self.proc.stderr:
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            raise RuntimeError("chromium did not start its DevTools server")

    def open(self, url: str) -> Tab:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?{url}", method="PUT")
        with urllib.request.urlopen(req, timeout=10) as resp:
            target = json.loads(resp.read())
        return Tab(target["webSocketDebuggerUrl"], target["id"], self)

    def close(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Tab:
    """A page of the browser, open until :meth:`close`."""

    def __init__(self, ws_url: str, target: str, browser: Browser) -> None:
        self.ws_url, self.target, self.browser = ws_url, target, browser

    def screenshot(self, path: str) -> None:
        """Save what the page shows now as a PNG (its full height, at the browser's width)."""
        data = asyncio.run(self._capture())
        with open(path, "wb") as fh:
            fh.write(data)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page."""
        return asyncio.run(self._call("Runtime.evaluate", {"expression": expression, "returnByValue": True}))

    async def _call(self, method: str, params: dict):
        from tornado.websocket import websocket_connect

        ws = await websocket_connect(self.ws_url, max_message_size=256 << 20)
        try:
            await ws.write_message(json.dumps({"id": 1, "method": method, "params": params}))
            while True:
                msg = json.loads(await ws.read_message())
                if msg.get("id") == 1:
                    return msg.get("result", {}).get("result", {}).get("value", msg.get("result"))
        finally:
            ws.close()

    async def _capture(self) -> bytes:
        from tornado.websocket import websocket_connect

        ws = await websocket_connect(self.ws_url, max_message_size=256 << 20)
        try:
            calls = [
                (
                    "Emulation.setDeviceMetricsOverride",
                    {
                        "width": self.browser.width,
                        "height": self.browser.height,
                        "deviceScaleFactor": 1,
                        "mobile": False,
                    },
                ),
                ("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False}),
            ]
            result = None
            for i, (method, params) in enumerate(calls, 1):
                await ws.write_message(json.dumps({"id": i, "method": method, "params": params}))
                while True:
                    msg = json.loads(await ws.read_message())
                    if msg.get("id") == i:
                        result = msg.get("result", {})
                        break
            return base64.b64decode(result["data"])
        finally:
            ws.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            urllib.request.urlopen(f"http://127.0.0.1:{self.browser.port}/json/close/{self.target}", timeout=10).read()
