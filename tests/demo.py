"""The demo: real WireGuard interfaces, real traffic, a real awgd, shown by awgctl.

A server namespace with a wireguard-go interface and three client namespaces, each
pinging the server at its own rate; awgd samples every 5 s with a temporary config,
ledger and socket; `awgctl status` and `awgctl peers` show the moving numbers. Ctrl-C (or
--once) stops it and removes everything it created. Run by tests/demo.sh.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "helpers"))

from daemon import ROOT, Awgd  # noqa: E402
from wgbed import TestBed, available  # noqa: E402

# (interval in seconds, ICMP payload bytes) per client: three different users.
RATES = [(0.2, 1000), (0.5, 400), (1.0, 56)]


def awgctl(socket: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "client")])}
    result = subprocess.run(
        [sys.executable, "-m", "awgd_client", "--socket", socket, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    return result.stdout + result.stderr


def show(daemon: Awgd, clear: bool) -> None:
    screen = "\033[H\033[2J" if clear else ""
    print(
        f"{screen}$ awgctl status\n{awgctl(daemon.socket, 'status')}\n$ awgctl peers\n{awgctl(daemon.socket, 'peers')}"
    )
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--once", action="store_true", help="show the figures once and exit")
    parser.add_argument("--refresh", type=float, default=5.0, help="seconds between screens (default 5)")
    args = parser.parse_args()
    problem = available()
    if problem:
        print(f"demo: {problem}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    workdir = Path(tempfile.mkdtemp(prefix="awgd-demo-"))
    pingers: list[subprocess.Popen[bytes]] = []
    print("demo: bringing up a wireguard-go server and three clients in network namespaces ...")
    with TestBed(clients=3) as bed:
        daemon = Awgd(workdir, "auto", sampling="* * * * * */5", periods={"timezone": ""}, prefix=bed.server.argv())
        try:
            daemon.start()
            server = bed.servers[0]
            for client, (interval, size) in zip(bed.peers, RATES, strict=True):
                command = client.host.argv("ping", "-q", "-i", str(interval), "-s", str(size), server.address)
                pingers.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            print(f"demo: awgd is sampling every 5 s; its socket is {daemon.socket}")
            if args.once:
                time.sleep(6)  # let some traffic cross the tunnels
                awgctl(daemon.socket, "sample")
                show(daemon, clear=False)
            else:
                while True:
                    time.sleep(args.refresh)
                    show(daemon, clear=sys.stdout.isatty())
                    print("(Ctrl-C to stop and remove everything)")
        except KeyboardInterrupt:
            print("\ndemo: stopping")
        finally:
            for pinger in pingers:
                pinger.terminate()
                pinger.wait()
            if daemon.process is not None:
                daemon.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    print("demo: removed the namespaces, interfaces and files it created")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
