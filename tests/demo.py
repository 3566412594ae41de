"""The demo: real AmneziaWG interfaces, real traffic, a real awgd, shown by awgctl.

A server namespace with an amneziawg-go interface (obfuscation on: junk packets, paddings,
custom headers) and three client namespaces, each pinging the server at its own rate; awgd
samples every 5 s with a temporary config, ledger and socket, and knows the clients by the
names an operator gave them (two in an Amnezia-style clientsTable, one in a `# Name =`
comment of the interface's config file); `awgctl status` and `awgctl peers` show the moving
numbers. Without amneziawg-go and awg (on PATH or in ../shared/amneziawg) it runs Debian's
wireguard-go and wg instead, and says so. Ctrl-C (or --once) stops it and removes everything
it created. Run by tests/demo.sh.
"""

from __future__ import annotations

import argparse
import json
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
from wgbed import AMNEZIAWG, WIREGUARD, Flavor, TestBed, available  # noqa: E402

# (interval in seconds, ICMP payload bytes, name) per client: three different users.
CLIENTS = [(0.2, 1000, "Alice's phone"), (0.5, 400, "Bob's laptop"), (1.0, 56, "Carol's router")]


def flavor() -> Flavor:
    if available(AMNEZIAWG) is None:
        print(f"demo: AmneziaWG: {AMNEZIAWG.daemon} and {AMNEZIAWG.tool}, obfuscation on")
        return AMNEZIAWG
    print(f"demo: AmneziaWG is not here ({available(AMNEZIAWG)}); running WireGuard (wireguard-go and wg) instead")
    return WIREGUARD


def write_names(bed: TestBed, workdir: Path) -> dict[str, str]:
    """The clients' names where operators keep them; awgd's `wireguard` settings to find them."""
    keys = [client.tunnel.public_key for client in bed.peers]
    names = [name for _, _, name in CLIENTS]
    table = workdir / "clientsTable"
    rows = [{"clientId": key, "userData": {"clientName": name}} for key, name in zip(keys[:2], names[:2], strict=True)]
    table.write_text(json.dumps(rows))
    server = bed.servers[0]
    config_dir = workdir / "conf"
    config_dir.mkdir()
    (config_dir / f"{server.ifname}.conf").write_text(
        f"[Interface]\nListenPort = {server.port}\n\n# Name = {names[2]}\n[Peer]\nPublicKey = {keys[2]}\n"
    )
    return {"names_file": str(table), "config_dir": str(config_dir)}


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
    chosen = flavor()
    daemon_name = chosen.daemon.rsplit("/", 1)[-1]
    print(f"demo: bringing up the server ({daemon_name}) and three clients in network namespaces ...")
    with TestBed(clients=3, flavor=chosen) as bed:
        daemon = Awgd(
            workdir,
            "auto",
            wireguard=write_names(bed, workdir),
            sampling="* * * * * */5",
            periods={"timezone": ""},
            prefix=bed.server.argv(),
            env=bed.path_env(),
        )
        try:
            daemon.start()
            server = bed.servers[0]
            for client, (interval, size, _) in zip(bed.peers, CLIENTS, strict=True):
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
