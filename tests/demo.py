"""The demo: real AmneziaWG interfaces, real traffic, a real awgd, shown by awgctl; and what a
seller runs it for: a plan, its warning, the cut-off, a top-up, and the bot's /stats text.

A server namespace with an amneziawg-go interface (obfuscation on: junk packets, paddings,
custom headers) and three client namespaces, each pinging the server at its own rate; awgd
samples every 5 s with a temporary config, ledger and socket, and knows the clients by the
names an operator gave them (two in an Amnezia-style clientsTable, one in a `# Name =`
comment of the interface's config file); `awgctl status` and `awgctl peers` show the moving
numbers. Alice is sold a small plan: she reaches its warning, then its limit and is cut off,
then a top-up gives her access back; `awgctl events` shows each step
and the bot's /stats text for her is printed in English and in Russian, rendered by
awgd_client.user_texts from awgd's answers as the shipped aiogram router renders it.
Without amneziawg-go and awg (on PATH or in ../shared/amneziawg) it runs Debian's wireguard-go
and wg instead, and says so. Ctrl-C (or --once) stops it and removes everything it created.
Run by tests/demo.sh.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "helpers"))
sys.path.insert(0, str(HERE.parent / "client"))

from daemon import ROOT, Awgd  # noqa: E402
from wgbed import AMNEZIAWG, WIREGUARD, Flavor, TestBed, available  # noqa: E402

from awgd_client import Client, PeerTraffic  # noqa: E402
from awgd_client.user_texts import UserTexts, display_name, render_stats  # noqa: E402

# (interval in seconds, ICMP payload bytes, name) per client: three different users.
CLIENTS = [(0.2, 1000, "Alice's phone"), (0.5, 400, "Bob's laptop"), (1.0, 56, "Carol's router")]
# Alice's plan: what she has used plus this much, warned at half of it. Her pings move about
# 11 kB/s, so the warning comes in seconds and the cut-off a few seconds later.
PLAN_HEADROOM = 150_000
TOP_UP = 1_000_000
# How long the story waits for awgd to tell each step before it says so and goes on.
STEP_TIMEOUT = 60.0


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
    columns = str(shutil.get_terminal_size().columns)  # awgctl's tables fit the demo's terminal
    env = {**os.environ, "COLUMNS": columns, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "client")])}
    result = subprocess.run(
        [sys.executable, "-m", "awgd_client", "--socket", socket, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    return result.stdout + result.stderr


def show(daemon: Awgd, clear: bool, alice: str | None) -> None:
    screen = "\033[H\033[2J" if clear else ""
    print(
        f"{screen}$ awgctl status\n{awgctl(daemon.socket, 'status')}\n$ awgctl peers\n{awgctl(daemon.socket, 'peers')}"
    )
    if alice is not None:
        print(f"$ awgctl events --limit 6\n{awgctl(daemon.socket, 'events', '--limit', '6')}")
        print(bot_stats(daemon, alice))
    sys.stdout.flush()


def bot_stats(daemon: Awgd, key: str) -> str:
    """Alice's /stats as the bot sends it, in both languages (HTML tags left out here)."""
    with Client(daemon.socket) as client:
        figures = [client.traffic(key)]
    shown = []
    for language in ("en", "ru"):
        text = render_stats(UserTexts(language), [(display_name(key, None, figures[0]), figures)])
        plain = html.unescape(re.sub(r"</?b>", "", text))
        shown.append(f"--- the bot's /stats for Alice ({language}) ---\n{plain}")
    return "\n".join(shown) + "\n"


def wait_for_event(client: Client, since: int, kind: str) -> int:
    """The id of the first `kind` event after `since`, as awgd stores it (polled once a second)."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        for event in client.events(since=since, types=[kind]).events:
            return event.id
        time.sleep(1)
    raise TimeoutError(f"awgd told no {kind} within {STEP_TIMEOUT:.0f} s")


def seller_story(daemon: Awgd, alice: str) -> None:
    """Alice's plan: the warning, the cut-off and a top-up, each as awgd tells it."""
    with Client(daemon.socket) as client:
        peer: PeerTraffic = client.traffic(alice, fresh=True)
        since = client.events(limit=1).last_id
        limit = peer.period.total_bytes + PLAN_HEADROOM
        print(f"\n$ awgctl plan set {alice[:12]} --limit {limit}B --reset month --warn 50%")
        print(awgctl(daemon.socket, "plan", "set", alice, "--limit", f"{limit}B", "--reset", "month", "--warn", "50%"))
        print("demo: Alice keeps pinging; waiting for awgd's warning and cut-off ...")
        wait_for_event(client, since, "quota.warning")
        cut = wait_for_event(client, since, "quota.exceeded")
        print(f"$ awgctl events --since {since}\n{awgctl(daemon.socket, 'events', '--since', str(since))}")
        print(bot_stats(daemon, alice))
        # What the bot's /topup does (awgd_client.aiogram_admin): the same plan, a larger limit.
        plan = client.traffic(alice).plan
        assert plan is not None and plan.limit_bytes is not None
        print(f"demo: Alice buys {TOP_UP // 1000} kB more (the bot's /topup: the plan's limit raised)")
        client.plan_set(peer.interface, alice, **plan.plan_set_args() | {"limit_bytes": plan.limit_bytes + TOP_UP})
        print(f"$ awgctl events --since {cut}\n{awgctl(daemon.socket, 'events', '--since', str(cut))}")


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
            alice = bed.peers[0].tunnel.public_key
            time.sleep(6)  # let some traffic cross the tunnels
            awgctl(daemon.socket, "sample")
            show(daemon, clear=False, alice=None)
            seller_story(daemon, alice)
            if args.once:
                awgctl(daemon.socket, "sample")
                show(daemon, clear=False, alice=alice)
            else:
                while True:
                    time.sleep(args.refresh)
                    show(daemon, clear=sys.stdout.isatty(), alice=alice)
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
