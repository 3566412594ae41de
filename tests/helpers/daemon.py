"""Run the real `awgd` process for a test: its config, its notify socket, a raw client."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
START_TIMEOUT = 30.0


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> None:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")


class NotifyListener:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET; records every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            for line in data.decode().split("\n"):
                self.messages.append((time.monotonic(), line))
                self._queue.put(line)

    def wait_for(self, prefix: str, timeout: float = START_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line.startswith(prefix):
                return line
        raise TimeoutError(f"no {prefix!r} notification within {timeout} s; got {self.lines()}")

    def lines(self) -> list[str]:
        return [line for _, line in self.messages]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class Awgd:
    """One real awgd process with a config in `directory`."""

    def __init__(
        self,
        directory: Path,
        tool: str | Path,
        *,
        wireguard: dict[str, Any] | None = None,
        sampling: str = "0 0 1 1 *",  # effectively never: tests trigger samples themselves
        periods: dict[str, Any] | None = None,
        rpc: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
        ledger_dir: Path | None = None,
        clients: dict[str, Any] | None = None,
        ledger: dict[str, Any] | None = None,
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = str((rpc or {}).get("socket", directory / "awgd.sock"))
        self.ledger = (ledger_dir or directory) / "ledger.sqlite3"
        self.config = directory / "awgd.toml"
        self.log = directory / "awgd.log"
        write_config(
            self.config,
            {
                "wireguard": {"tool": str(tool), **(wireguard or {})},
                "sampling": {"schedule": sampling},
                "periods": {"timezone": "Europe/Moscow", **(periods or {})},
                "ledger": {"url": f"sqlite:///{self.ledger}", **(ledger or {})},
                "rpc": {"group": "", **(rpc or {}), "socket": self.socket},
                **({"clients": clients} if clients else {}),
            },
        )
        self.env = env or {}
        self.prefix = prefix or []
        self.process: subprocess.Popen[bytes] | None = None
        self.notify: NotifyListener | None = None
        self.answers: list[bytes] = []  # every answer line read, for the secrets check

    def command(self, *args: str) -> list[str]:
        return [*self.prefix, sys.executable, "-m", "awgd", "--config", str(self.config), *args]

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "client"), str(ROOT / "fleet")]),
            **self.env,
        }

    def start(self, wait_ready: bool = True) -> Awgd:
        notify_path = self.dir / f"notify-{time.monotonic_ns()}.sock"
        self.notify = NotifyListener(notify_path)
        env = self.environment()
        env["NOTIFY_SOCKET"] = str(notify_path)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command(), env=env, stdout=log, stderr=log)
        if wait_ready:
            try:
                self.notify.wait_for("READY=1")
            except TimeoutError:
                self.stop(signal.SIGKILL)
                raise AssertionError(f"awgd did not get ready; its log:\n{self.log.read_text()}") from None
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if self.notify is not None:
            self.notify.close()
        return code

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
        if params:
            message["params"] = params
        return self.raw(message)

    def result(self, method: str, **params: Any) -> Any:
        response = self.call(method, **params)
        assert "result" in response, response
        return response["result"]

    def raw(self, message: Any) -> Any:
        line = self.raw_lines([json.dumps(message).encode()])[0]
        return json.loads(line)

    def raw_lines(self, lines: list[bytes], expect: int | None = None, timeout: float = 30) -> list[bytes]:
        """Send lines on one connection; read `expect` answer lines (default: one per line)."""
        want = len(lines) if expect is None else expect
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(self.socket)
            # A refused connection is answered and closed at once: its answer is still there to read.
            with contextlib.suppress(BrokenPipeError):
                sock.sendall(b"".join(line + b"\n" for line in lines))
            data = b""
            while data.count(b"\n") < want:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        self.answers.append(data)
        return data.split(b"\n")[:want] if want else []

    def written(self) -> bytes:
        """Everything awgd wrote that a secret could leak into: its log and its ledger files."""
        files = [self.log, *self.ledger.parent.glob("ledger.sqlite3*")]
        return b"".join(path.read_bytes() for path in files if path.exists()) + b"".join(self.answers)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")
