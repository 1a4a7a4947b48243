"""Open a page in headless Chromium and watch it through the DevTools protocol (stdlib only).

The DevTools protocol (https://chromedevtools.github.io/devtools-protocol/) speaks JSON over a
websocket; the standard library has no websocket client, so this file carries the small part of
RFC 6455 it needs (client handshake, masked text frames out, unmasked frames in) rather than
adding a test dependency. It reports console errors, uncaught exceptions, log errors (CSP, failed
loads), every network request, how many plotly figures rendered, and saves a screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-unsafe-swiftshader", "--remote-debugging-port=0", "--window-size=1400,4000"]


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _WebSocket:
    def __init__(self, url: str, timeout: float) -> None:
        host_port, path = url.removeprefix("ws://").split("/", 1)
        host, port = host_port.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(f"websocket handshake failed: {head!r}")

    def send(self, text: str) -> None:
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        header = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                  bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                                  bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("websocket closed")
            buf += chunk
        return bytes(buf)

    def recv(self) -> str:
        message = bytearray()
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            payload = self._exact(n)
            if b0 & 0x0F in (0x1, 0x0):
                message += payload
                if b0 & 0x80:
                    return message.decode()


@dataclass
class PageCheck:
    """What the browser saw."""

    rendered_plots: int = 0
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    text: str = ""
    alerts: list[str] = field(default_factory=list)
    probe: Any = None


def open_page(page: Path, screenshot: Path | None = None, probe: str | None = None,
              timeout: float = 60.0) -> PageCheck:
    """Load ``page`` in headless Chromium; wait until its plotly figures stop appearing.

    ``probe``: a JavaScript expression evaluated after rendering (awaited; its JSON value is kept).
    """
    exe = find_chromium()
    assert exe, "chromium not found"
    profile = tempfile.mkdtemp(prefix="trainplan-chromium-")
    proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.monotonic() < deadline and proc.poll() is None, "chromium did not start"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        ws = _WebSocket(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"], timeout)
        return _drive(ws, page, screenshot, probe, deadline)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def _drive(ws: _WebSocket, page: Path, screenshot: Path | None, probe: str | None, deadline: float) -> PageCheck:
    check = PageCheck()
    ids = iter(range(1, 10**6))

    def call(method: str, **params: Any) -> dict[str, Any]:
        i = next(ids)
        ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(ws.recv())
            if msg.get("id") == i:
                return msg.get("result", {})
            _event(check, msg)
            if msg.get("method") == "Page.javascriptDialogOpening":  # an alert() ran: record it, close it
                ws.send(json.dumps({"id": next(ids), "method": "Page.handleJavaScriptDialog",
                                    "params": {"accept": True}}))

    for domain in ("Runtime", "Log", "Network", "Page"):
        call(f"{domain}.enable")
    call("Page.navigate", url=page.resolve().as_uri())
    count, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        value = call("Runtime.evaluate", expression=(
            "document.readyState === 'complete' ? "
            "document.querySelectorAll('.js-plotly-plot .main-svg').length : -1"))["result"].get("value", -1)
        if value != count:
            count, stable_since = value, time.monotonic()
        elif count >= 0 and time.monotonic() - stable_since > 1.5:
            break
        time.sleep(0.25)
    check.rendered_plots = call("Runtime.evaluate", expression=(
        "Array.from(document.querySelectorAll('.js-plotly-plot')).filter("
        "d => d.querySelector('.main-svg') && d._fullLayout).length"))["result"]["value"]
    check.text = call("Runtime.evaluate", expression="document.body.innerText")["result"]["value"]
    if probe is not None:
        check.probe = call("Runtime.evaluate", expression=probe, awaitPromise=True,
                           returnByValue=True)["result"].get("value")
    if screenshot is not None:
        shot = call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
    return check


def _event(check: PageCheck, msg: dict[str, Any]) -> None:
    method, params = msg.get("method"), msg.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        check.errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
    elif method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        check.errors.append("exception: " + str(details.get("exception", {}).get("description", details.get("text"))))
    elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
        check.errors.append("log: " + params["entry"]["text"])
    elif method == "Network.requestWillBeSent":
        check.requests.append(params["request"]["url"])
    elif method == "Page.javascriptDialogOpening":
        check.alerts.append(params.get("message", ""))
