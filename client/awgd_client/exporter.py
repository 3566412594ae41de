"""awgd-exporter: awgd's metrics for Prometheus over HTTP (docs/METRICS.md).

An unprivileged process in group `awgd`: it reads awgd through its socket and serves
`GET /metrics` on `--listen` (default 127.0.0.1:9586). The root daemon itself opens no TCP
port. Needs prometheus_client (the client's `exporter` extra, or Debian's
python3-prometheus-client), which writes awgd's own families.

What the socket keeps to group `awgd` must not reach every local user through a port (the
review's D12): with a token (`--token-file`, or the systemd credential `exporter-token`) every
request must carry `Authorization: Bearer TOKEN` (Prometheus: `authorization:
credentials_file:`); without one, nothing per peer is served (keys, labels, usage), only the
server's own health and totals. One asyncio loop serves every connection: a request must be
whole within REQUEST_TIMEOUT_SECONDS (else 400), at most MAX_CONNECTIONS are open at once
(else 503), and requests that arrive while a scrape runs, or within SHARE_SECONDS of its
start, share it: a flood of requests costs one read of awgd a second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from awgd_client import methods
from awgd_client.sync_client import Client

DEFAULT_LISTEN = "127.0.0.1:9586"
# A scrape that waits longer than Prometheus's default scrape timeout (10 s) is worthless:
# awgd not answering within it counts as awgd being down.
SCRAPE_TIMEOUT_SECONDS = 8.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The systemd credential the token may come in (LoadCredential=exporter-token:...).
CREDENTIAL = "exporter-token"
# A request's line and headers must arrive within this, and fit in this many bytes:
# Prometheus sends a few hundred at once; a client that trickles or never finishes is answered
# 400 and closed (the review saw 252 idle connections spin the old server at 100 % CPU).
REQUEST_TIMEOUT_SECONDS = 5.0
MAX_HEAD_BYTES = 16 * 1024
# An answer a client does not take within this is dropped.
WRITE_TIMEOUT_SECONDS = 10.0
# Connections open at once; more are answered 503 and closed. A few Prometheus servers and
# an admin's curl need a handful.
MAX_CONNECTIONS = 64
# Requests within this long of a scrape's start get that scrape's answer.
SHARE_SECONDS = 1.0


def listen_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `:PORT` (every address)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    host = host.removeprefix("[").removesuffix("]")
    return host or "0.0.0.0", int(port)  # noqa: S104 - ":PORT" asks for every address


def read_token(path: str | None) -> bytes | None:
    """The token from `path`, else from the systemd credential, else None. Raises OSError
    or ValueError (an empty or unprintable token)."""
    if path is None:
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        found = Path(credentials, CREDENTIAL) if credentials else None
        if found is None or not found.exists():
            return None
        path = str(found)
    token = Path(path).read_bytes().strip()
    if not token or not token.isascii() or not all(32 < byte < 127 for byte in token):
        raise ValueError(f"{path}: the token must be printable ASCII without spaces")
    return token


class SharedScrape:
    """One scrape at a time, its answer shared by every request that comes while it runs
    or within SHARE_SECONDS of its start."""

    def __init__(self, scrape: Callable[[], bytes]) -> None:
        self._scrape = scrape
        self._current: asyncio.Future[bytes] | None = None
        self._started = -float("inf")
        self.scrapes = 0

    async def get(self) -> bytes:
        now = time.monotonic()
        if self._current is None or (now - self._started >= SHARE_SECONDS and self._current.done()):
            self._started = now
            self.scrapes += 1
            self._current = asyncio.ensure_future(asyncio.to_thread(self._scrape))
        return await asyncio.shield(self._current)


class Exporter:
    def __init__(self, scrape: SharedScrape, token: bytes | None) -> None:
        self._scrape = scrape
        self._token = token
        self._open = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            if self._open > MAX_CONNECTIONS:
                await self._answer(writer, 503, b"too many connections\n")
                return
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                await self._answer(writer, 400, b"the request did not arrive whole\n")
                return
            status, body, extra = await self._respond(head)
            await self._answer(writer, status, body, extra)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
                    await writer.wait_closed()

    async def _respond(self, head: bytes) -> tuple[int, bytes, dict[str, str]]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, b"not an HTTP request\n", {}
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return 405, b"only GET\n", {"Allow": "GET, HEAD"}
        if target.split("?", 1)[0] not in ("/metrics", "/"):
            return 404, b"only /metrics is here\n", {}
        if self._token is not None:
            given = b""
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "authorization":
                    scheme, _, credentials = value.strip().partition(" ")
                    if scheme.lower() == "bearer":
                        given = credentials.strip().encode("latin-1")
            if not hmac.compare_digest(given, self._token):
                return 401, b"a bearer token is needed\n", {"WWW-Authenticate": 'Bearer realm="awgd-exporter"'}
        body = await self._scrape.get()
        return 200, b"" if method == "HEAD" else body, {"Content-Type": CONTENT_TYPE}

    @staticmethod
    async def _answer(
        writer: asyncio.StreamWriter, status: int, body: bytes, extra: dict[str, str] | None = None
    ) -> None:
        reasons = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}
        headers = {"Content-Type": "text/plain; charset=utf-8", **(extra or {})}
        head = f"HTTP/1.1 {status} {reasons.get(status, 'Service Unavailable')}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode("latin-1") + body)
        async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
            await writer.drain()


async def serve(host: str, port: int, exporter: Exporter, ready: Callable[[], None]) -> None:
    server = await asyncio.start_server(exporter.handle, host, port, limit=MAX_HEAD_BYTES)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    ready()
    async with server:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="awgd-exporter", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=listen_address, default=DEFAULT_LISTEN, help=f"default {DEFAULT_LISTEN}")
    parser.add_argument("--socket", default=None, help=f"awgd's socket (default {methods.DEFAULT_SOCKET})")
    parser.add_argument("--no-peer-metrics", action="store_true", help="leave out every per-peer series")
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"require `Authorization: Bearer` with the token in FILE (default: the credential {CREDENTIAL})",
    )
    args = parser.parse_args(argv)
    try:
        from awgd_client.metrics import render
    except ImportError as exc:
        print(f"awgd-exporter: needs prometheus_client (pip install 'awgd-client[exporter]'): {exc}", file=sys.stderr)
        return 2
    try:
        token = read_token(args.token_file)
    except (OSError, ValueError) as exc:
        print(f"awgd-exporter: cannot use the token: {exc}", file=sys.stderr)
        return 2
    host, port = args.listen
    socket_path = methods.socket_path(args.socket)
    peers = not args.no_peer_metrics and token is not None
    if token is None and not args.no_peer_metrics:
        print(
            "awgd-exporter: no token (--token-file or the credential exporter-token): per-peer series are left out,"
            " since anyone who can connect would read every key, label and usage",
            file=sys.stderr,
        )

    def scrape() -> bytes:
        return render(lambda: Client(socket_path, timeout=SCRAPE_TIMEOUT_SECONDS), peer_metrics=peers)

    def ready() -> None:
        print(f"awgd-exporter: serving http://{host}:{port}/metrics from {socket_path}", file=sys.stderr, flush=True)

    try:
        asyncio.run(serve(host, port, Exporter(SharedScrape(scrape), token), ready))
    except OSError as exc:
        print(f"awgd-exporter: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
