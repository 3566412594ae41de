"""awgd-exporter: awgd's metrics for Prometheus over HTTP (docs/METRICS.md).

An unprivileged process in group `awgd`: it reads awgd through its socket on each scrape and
serves `GET /metrics` on `--listen` (default 127.0.0.1:9586), each scrape in its own thread.
The root daemon itself opens no TCP port. Needs prometheus_client (the client's `exporter`
extra, or Debian's python3-prometheus-client), which writes awgd's own families.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from awgd_client import methods
from awgd_client.sync_client import Client

DEFAULT_LISTEN = "127.0.0.1:9586"
# A scrape that waits longer than Prometheus's default scrape timeout (10 s) is worthless:
# awgd not answering within it counts as awgd being down.
SCRAPE_TIMEOUT_SECONDS = 8.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def listen_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `:PORT` (every address)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    host = host.removeprefix("[").removesuffix("]")
    return host or "0.0.0.0", int(port)  # noqa: S104 - ":PORT" asks for every address


class _Scrapes(ThreadingHTTPServer):
    daemon_threads = True  # a scrape left hanging never holds up the exit

    def __init__(self, address: tuple[str, int], scrape: Callable[[], bytes]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.scrape = scrape


class _Handler(BaseHTTPRequestHandler):
    server: _Scrapes

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] not in ("/metrics", "/"):
            self.send_error(404, "only /metrics is here")
            return
        body = self.server.scrape()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a line per scrape would flood the journal


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="awgd-exporter", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=listen_address, default=DEFAULT_LISTEN, help=f"default {DEFAULT_LISTEN}")
    parser.add_argument("--socket", default=None, help=f"awgd's socket (default {methods.DEFAULT_SOCKET})")
    parser.add_argument("--no-peer-metrics", action="store_true", help="leave out every per-peer series")
    args = parser.parse_args(argv)
    try:
        from awgd_client.metrics import render
    except ImportError as exc:
        print(f"awgd-exporter: needs prometheus_client (pip install 'awgd-client[exporter]'): {exc}", file=sys.stderr)
        return 2
    host, port = args.listen
    socket_path = methods.socket_path(args.socket)
    peers = not args.no_peer_metrics

    def scrape() -> bytes:
        return render(lambda: Client(socket_path, timeout=SCRAPE_TIMEOUT_SECONDS), peer_metrics=peers)

    try:
        server = _Scrapes((host, port), scrape)
    except OSError as exc:
        print(f"awgd-exporter: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    print(
        f"awgd-exporter: serving http://{args.listen[0]}:{port}/metrics from {socket_path}", file=sys.stderr, flush=True
    )
    stopped = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopped.wait()
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
