"""A real headless Chromium driven over the DevTools protocol through a pipe (no websocket library needed).

``chromium --remote-debugging-pipe`` reads JSON commands from fd 3 and writes replies/events to fd 4, each
message terminated by a NUL byte. ``Browser.evaluate`` runs JavaScript in a page and returns its value;
``Browser.screenshot`` writes a PNG. Installs Debian's ``chromium`` with apt when it is missing and we are root
(like tests/cluster/slurm_cluster.py installs SLURM); ``BrowserUnavailable`` otherwise.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

BINARIES = ("chromium", "chromium-browser", "google-chrome")


class BrowserUnavailable(RuntimeError):
    """No Chromium here and none can be installed (not root, no apt, install failed)."""


def find_binary() -> str | None:
    return next((b for name in BINARIES if (b := shutil.which(name))), None)


def ensure_installed(timeout_s: float = 900) -> str:
    binary = find_binary()
    if binary:
        return binary
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BrowserUnavailable("chromium is not installed and cannot be (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
    ):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            raise BrowserUnavailable(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    binary = find_binary()
    if not binary:
        raise BrowserUnavailable("chromium still missing after apt-get install")
    return binary


class Browser:
    def __init__(self, profile_dir: Path, width: int = 1400, height: int = 900, binary: str | None = None):
        binary = binary or ensure_installed()
        args = [
            binary,
            "--headless=new",
            "--no-sandbox",  # root in CI containers
            "--use-angle=swiftshader",  # software WebGL: plotly 3D surfaces render headless
            "--enable-unsafe-swiftshader",
            "--no-first-run",
            "--disable-extensions",
            "--allow-file-access-from-files",
            f"--user-data-dir={profile_dir}",
            f"--window-size={width},{height}",
            "--remote-debugging-pipe",
        ]
        # fd 3 <- our stdin pipe (commands), fd 4 -> our stdout pipe (replies)
        shell = 'exec "$@" 3<&0 4>&1 </dev/null >/dev/null'
        self.log_path = Path(profile_dir) / "chromium.log"
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            ["bash", "-c", shell, "chromium", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log
        )
        self._ids = itertools.count(1)
        self._buffer = b""
        self.session = None

    # --------------------------------------------------------------------------------------------- protocol
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from chromium (see " + str(self.log_path) + ")")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
                if not chunk:
                    raise RuntimeError(
                        f"chromium exited ({self.proc.poll()}); log: {self.log_path.read_text()[-2000:]}"
                    )
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, timeout_s: float = 60, session: bool = True) -> dict:
        msg_id = next(self._ids)
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        self.proc.stdin.write(json.dumps(msg).encode() + b"\0")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    # --------------------------------------------------------------------------------------------- pages
    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)[
            "sessionId"
        ]
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression: str, timeout_s: float = 60):
        """The value of a JavaScript expression (awaited if it is a promise)."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout_s=timeout_s,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 60, poll_s: float = 0.2):
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {expression}")
            time.sleep(poll_s)

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False, timeout_s=10)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
