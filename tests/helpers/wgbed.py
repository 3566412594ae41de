"""A real WireGuard test bed: network namespaces, veth links, Debian's wireguard-go and wg.

One server namespace with one or more wireguard-go interfaces, and client namespaces each
with its own wireguard-go peer, linked to the server by a veth pair. wireguard-go's control
socket lives in /run/wireguard, which every namespace shares, so each host gets a private
directory bind-mounted there inside its own `ip netns exec` (each has its own mount
namespace, so the bind mount never leaks to the machine). Everything carries a random
prefix and `down()` removes it all, even after a failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "awgt"  # every namespace, link and directory of a test bed starts with this
# Every private key a test bed made: nothing awgd writes or answers may contain one.
SECRETS: set[str] = set()
# The prefixes of the test beds this process made (another test run may share the machine).
MADE: set[str] = set()
PORT = 51820
# Bytes WireGuard counts (measured on these machines with wireguard-go): a data packet is
# 32 bytes of header and tag plus the inner packet padded to 16; handshake initiation 148,
# response 92. A ping is an 84-byte inner packet.
HANDSHAKE_INITIATION = 148
HANDSHAKE_RESPONSE = 92
PING_BYTES = 32 + 96
_MOUNT_AND_EXEC = 'mount --bind "$0" /run/wireguard && exec "$@"'


def available() -> str | None:
    """Why the test bed cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun for wireguard-go"
    for tool in ("wireguard-go", "wg", "ip", "ping"):
        if shutil.which(tool) is None:
            return f"needs {tool} (tests/run.sh installs wireguard-go, wireguard-tools, iputils-ping)"
    return None


def leftovers() -> list[str]:
    """Anything this process's test beds left on the machine: namespaces, links, processes, mounts."""
    found = [line for line in _anything_of_ours() if any(prefix in line for prefix in MADE)]
    return found


def _anything_of_ours() -> list[str]:
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    found += [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith(PREFIX)]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=False).stdout
    found += [f"link {m}" for m in re.findall(rf"^\d+: ({PREFIX}[^:@]*)", links, re.MULTILINE)]
    processes = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True, check=False).stdout
    found += [
        f"process {line.strip()}"
        for line in processes.splitlines()
        if "wireguard-go" in line and PREFIX in line and " Z" not in line
    ]
    with open("/proc/mounts") as mounts:
        found += [f"mount {line.split()[1]}" for line in mounts if f"/{PREFIX}" in line]
    return found


@dataclass
class Host:
    """A network namespace with its own /run/wireguard."""

    name: str
    rundir: Path

    def argv(self, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, "sh", "-c", _MOUNT_AND_EXEC, str(self.rundir), *command]

    def run(self, *command: str, check: bool = True, timeout: float = 30) -> str:
        result = subprocess.run(self.argv(*command), capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} in {self.name} failed: {result.stderr.strip()}")
        return result.stdout


@dataclass
class Tunnel:
    """One wireguard-go interface on a host."""

    host: Host
    ifname: str
    private_key: str
    public_key: str
    address: str
    port: int = PORT
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.host.argv("wireguard-go", "-f", self.ifname), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        socket = self.host.rundir / f"{self.ifname}.sock"
        deadline = time.monotonic() + 10
        while not socket.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"wireguard-go {self.ifname} did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None
        with contextlib.suppress(FileNotFoundError):
            (self.host.rundir / f"{self.ifname}.sock").unlink()

    def wg(self, *args: str) -> str:
        return self.host.run("wg", *args)

    def counters(self, peer_public_key: str) -> tuple[int, int]:
        """(rx, tx) of one peer, from this interface's own `wg show` counters."""
        for line in self.wg("show", self.ifname, "transfer").splitlines():
            key, rx, tx = line.split("\t")
            if key == peer_public_key:
                return int(rx), int(tx)
        raise KeyError(peer_public_key)

    def ifindex(self) -> int:
        out = self.host.run("ip", "-o", "link", "show", self.ifname)
        return int(out.split(":", 1)[0])


@dataclass
class Client:
    index: int
    host: Host
    tunnel: Tunnel
    server_ip: str


@dataclass
class TestBed:
    __test__ = False  # not a pytest test class

    clients: int = 3
    server_interfaces: int = 1
    tag: str = field(default_factory=lambda: secrets.token_hex(3))

    def __post_init__(self) -> None:
        self.prefix = f"{PREFIX}{self.tag}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{self.tag}-"))
        MADE.add(self.prefix)
        MADE.add(str(self.dir))
        self.server = self._host("s")
        self.servers: list[Tunnel] = []
        self.peers: list[Client] = []

    # ---- building ---------------------------------------------------------------------

    def _host(self, suffix: str) -> Host:
        rundir = self.dir / suffix
        rundir.mkdir()
        return Host(f"{self.prefix}{suffix}", rundir)

    def _keypair(self) -> tuple[str, str]:
        private = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
        SECRETS.add(private)
        public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True, check=True).stdout
        return private, public.strip()

    def up(self) -> TestBed:
        Path("/run/wireguard").mkdir(parents=True, exist_ok=True)
        try:
            self._create_namespace(self.server)
            for n in range(self.server_interfaces):
                private, public = self._keypair()
                self.servers.append(
                    Tunnel(self.server, f"{self.prefix}w{n}", private, public, f"10.{99 - n}.0.1", PORT + n)
                )
            for n in range(1, self.clients + 1):
                host = self._host(f"c{n}")
                self._create_namespace(host)
                self._link(n, host)
                private, public = self._keypair()
                server = self.servers[(n - 1) % self.server_interfaces]
                subnet = server.address.rsplit(".", 1)[0]
                self.peers.append(
                    Client(
                        n, host, Tunnel(host, f"{self.prefix}k", private, public, f"{subnet}.{n + 1}"), f"10.200.{n}.1"
                    )
                )
            for server in self.servers:
                self.start_server(server)
            for client in self.peers:
                self.start_client(client)
        except BaseException:
            self.down()
            raise
        return self

    def _create_namespace(self, host: Host) -> None:
        subprocess.run(["ip", "netns", "add", host.name], check=True)
        subprocess.run(["ip", "-n", host.name, "link", "set", "lo", "up"], check=True)

    def _link(self, n: int, host: Host) -> None:
        outer, inner = f"{self.prefix}v{n}", f"{self.prefix}u{n}"
        subprocess.run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner], check=True)
        subprocess.run(["ip", "link", "set", outer, "netns", self.server.name], check=True)
        subprocess.run(["ip", "link", "set", inner, "netns", host.name], check=True)
        subprocess.run(["ip", "-n", self.server.name, "addr", "add", f"10.200.{n}.1/30", "dev", outer], check=True)
        subprocess.run(["ip", "-n", self.server.name, "link", "set", outer, "up"], check=True)
        subprocess.run(["ip", "-n", host.name, "addr", "add", f"10.200.{n}.2/30", "dev", inner], check=True)
        subprocess.run(["ip", "-n", host.name, "link", "set", inner, "up"], check=True)

    def _key_file(self, tunnel: Tunnel) -> str:
        path = self.dir / f"{tunnel.ifname}-{tunnel.host.name}.key"
        path.write_text(tunnel.private_key + "\n")
        path.chmod(0o600)
        return str(path)

    def server_config(self, server: Tunnel) -> list[str]:
        args = ["set", server.ifname, "listen-port", str(server.port), "private-key", self._key_file(server)]
        for client in self.peers:
            if self.server_of(client) is server:
                args += ["peer", client.tunnel.public_key, "allowed-ips", f"{client.tunnel.address}/32"]
        return args

    def start_server(self, server: Tunnel) -> None:
        server.start()
        server.wg(*self.server_config(server))
        server.host.run("ip", "addr", "add", f"{server.address}/24", "dev", server.ifname)
        server.host.run("ip", "link", "set", server.ifname, "up")

    def server_of(self, client: Client) -> Tunnel:
        return self.servers[(client.index - 1) % self.server_interfaces]

    def start_client(self, client: Client) -> None:
        tunnel, server = client.tunnel, self.server_of(client)
        tunnel.start()
        tunnel.wg(
            "set",
            tunnel.ifname,
            "private-key",
            self._key_file(tunnel),
            "peer",
            server.public_key,
            "endpoint",
            f"{client.server_ip}:{server.port}",
            "allowed-ips",
            f"{server.address}/32",
        )
        client.host.run("ip", "addr", "add", f"{tunnel.address}/24", "dev", tunnel.ifname)
        client.host.run("ip", "link", "set", tunnel.ifname, "up")

    # ---- events -------------------------------------------------------------------------

    def ping(self, client: Client, count: int) -> None:
        """`count` pings, paced so that none is lost; every one must be answered."""
        server = self.server_of(client)
        client.host.run("ping", "-c", str(count), "-i", "0.05", "-W", "5", "-q", server.address, timeout=60)

    def restart_server(self, server: Tunnel) -> None:
        """Kill and restart wireguard-go: a new ifindex and zeroed counters."""
        server.kill()
        self.start_server(server)

    def restart_client(self, client: Client) -> None:
        """A fresh client session (so it handshakes at once, not after ~15 s)."""
        client.tunnel.kill()
        self.start_client(client)

    def remove_peer(self, client: Client) -> None:
        self.server_of(client).wg("set", self.server_of(client).ifname, "peer", client.tunnel.public_key, "remove")

    def add_peer(self, client: Client) -> None:
        server = self.server_of(client)
        server.wg("set", server.ifname, "peer", client.tunnel.public_key, "allowed-ips", f"{client.tunnel.address}/32")

    def setconf_same(self, server: Tunnel) -> None:
        """`wg setconf` with the interface's own unchanged config: zeroes every peer."""
        conf = self.dir / f"{server.ifname}.conf"
        conf.write_text(server.wg("showconf", server.ifname))
        conf.chmod(0o600)
        server.wg("setconf", server.ifname, str(conf))

    def reboot_server(self) -> None:
        """Like a reboot: the namespace and everything in it made anew, in the same order, so the
        interfaces get the same ifindexes and zeroed counters. Only the boot id can tell."""
        for server in self.servers:
            server.kill()
        subprocess.run(["ip", "netns", "del", self.server.name], check=True)
        self._create_namespace(self.server)
        for client in self.peers:
            # the veth pair died with the old namespace
            subprocess.run(
                ["ip", "-n", client.host.name, "link", "del", f"{self.prefix}u{client.index}"],
                capture_output=True,
                check=False,
            )
            self._link(client.index, client.host)
        for server in self.servers:
            self.start_server(server)

    # ---- teardown ---------------------------------------------------------------------------

    def down(self) -> None:
        for tunnel in [*self.servers, *(c.tunnel for c in self.peers)]:
            with contextlib.suppress(Exception):
                tunnel.kill()
        for host in [self.server, *(c.host for c in self.peers)]:
            subprocess.run(["ip", "netns", "del", host.name], capture_output=True, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> TestBed:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def expected(pings: int, handshake: bool = True) -> tuple[int, int]:
    """(rx, tx) on the server for `pings` pings, with the handshake that starts a session."""
    rx = PING_BYTES * pings + (HANDSHAKE_INITIATION if handshake else 0)
    tx = PING_BYTES * pings + (HANDSHAKE_RESPONSE if handshake else 0)
    return rx, tx
