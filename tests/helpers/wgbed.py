"""A real WireGuard or AmneziaWG test bed: network namespaces, veth links, userspace daemons.

One server namespace with one or more interfaces, and client namespaces each with its own
peer, linked to the server by a veth pair. The data plane is a userspace daemon, its flavor
one of FLAVORS: Debian's wireguard-go with wg, or amneziawg-go with awg (the current 3.1
release, or the 2024 pair Amnezia's image used), with AmneziaWG's obfuscation on. The
daemon's control socket lives in a run directory that every network namespace would share
(it is per mount namespace), so each host gets a private directory bind-mounted there inside
its own `ip netns exec`, and the bind mount never leaks to the machine. Everything carries a
random prefix, and `down()` removes it all, even after a failure.

The AmneziaWG binaries come from ../shared/amneziawg beside the project (with their sources
and a rebuild script), or from PATH; without either, the AmneziaWG flavors are unavailable
and their tests skip, saying so.
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
ROOT = Path(__file__).resolve().parent.parent.parent
SHARED_AMNEZIAWG = ROOT.parent / "shared" / "amneziawg"
# Bytes WireGuard counts (measured with wireguard-go and amneziawg-go): a data packet is 32
# bytes of header and tag plus the inner packet padded to 16; handshake initiation 148,
# response 92. A ping is an 84-byte inner packet. AmneziaWG's receiving side counts the same
# plain sizes; its sending side counts every byte it puts on the wire (junk, paddings).
HANDSHAKE_INITIATION = 148
HANDSHAKE_RESPONSE = 92
PING_BYTES = 32 + 96
DAEMONS = ("wireguard-go", "amneziawg-go")
# A test's own Docker engine (tests/helpers/amnezia.py) runs these, its paths in their arguments.
ENGINE_PROCESSES = ("dockerd", "containerd")


@dataclass(frozen=True)
class Flavor:
    """A userspace data plane: its daemon, its tool, where its sockets live, its obfuscation."""

    name: str
    daemon: str
    tool: str
    rundir: str
    obfuscation: dict[str, str] = field(default_factory=dict)  # [Interface] keys both sides share

    @property
    def id(self) -> str:
        return self.name.replace(" ", "-")

    def missing(self) -> str | None:
        """Why this flavor cannot run here, or None."""
        for binary in (self.daemon, self.tool):
            if shutil.which(binary) is None:
                return f"needs {binary} ({self.where})"
        return None

    @property
    def where(self) -> str:
        if self.daemon == "wireguard-go":
            return "tests/run.sh installs wireguard-go and wireguard-tools"
        return "../shared/amneziawg beside the project, or amneziawg-go and awg on PATH"

    def junk(self, name: str) -> int:
        return int(self.obfuscation.get(name, "0"))

    @property
    def tool_name(self) -> str:
        """What awgd reports as its tool: `awg` for AmneziaWG (found as awg on PATH), else wg."""
        return "wg" if self.tool == "wg" else "awg"

    def client_expected(self, pings: int) -> tuple[int, tuple[int, int]]:
        """The client's own counters for the same session: rx exactly; tx between bounds, as
        its junk packets before the handshake have random sizes between Jmin and Jmax."""
        rx = HANDSHAKE_RESPONSE + PING_BYTES * pings
        sent = HANDSHAKE_INITIATION + self.junk("S1") + (PING_BYTES + self.junk("S4")) * pings
        sent += len(bytes.fromhex(self.obfuscation["I1"].split("0x")[1].rstrip(">"))) if "I1" in self.obfuscation else 0
        return rx, (sent + self.junk("Jc") * self.junk("Jmin"), sent + self.junk("Jc") * self.junk("Jmax"))

    def expected(self, pings: int, handshake: bool = True) -> tuple[int, int]:
        """(rx, tx) on the server for `pings` pings, with the handshake that starts a session:
        rx = 148 + 128·N; tx = 92 + S2 + (128 + S4)·N (S2 and S4 are 0 on plain WireGuard)."""
        rx = PING_BYTES * pings + (HANDSHAKE_INITIATION if handshake else 0)
        tx = (PING_BYTES + self.junk("S4")) * pings + (HANDSHAKE_RESPONSE + self.junk("S2") if handshake else 0)
        return rx, tx


def _amneziawg(binary: str, legacy: str) -> str:
    """A binary from ../shared/amneziawg if it is there, else its name (to be found on PATH)."""
    shared = SHARED_AMNEZIAWG / binary
    return str(shared) if shared.exists() else legacy


WIREGUARD = Flavor("wireguard-go", "wireguard-go", "wg", "/run/wireguard")
# Non-default obfuscation, as a real AmneziaWG server has it. H1..H4 must be distinct and above 4.
_HEADERS = {"H1": "1234567891", "H2": "1234567892", "H3": "1234567893", "H4": "1234567894"}
AMNEZIAWG = Flavor(
    "amneziawg-go 3.1",
    _amneziawg("bin/amneziawg-go", "amneziawg-go"),
    _amneziawg("bin/awg", "awg"),
    "/run/amneziawg",
    {
        "Jc": "4",
        "Jmin": "40",
        "Jmax": "70",
        "S1": "50",
        "S2": "100",
        "S3": "20",
        "S4": "16",
        **_HEADERS,
        "I1": "<b 0x6177676474657374>",
    },
)
AMNEZIAWG_2024 = Flavor(
    "amneziawg-go 0.2.12",
    _amneziawg("legacy/amneziawg-go-v0.2.12", "amneziawg-go-v0.2.12"),
    _amneziawg("legacy/awg-v1.0.20240213", "awg-v1.0.20240213"),
    "/run/amneziawg",
    {"Jc": "3", "Jmin": "30", "Jmax": "60", "S1": "40", "S2": "80", **_HEADERS},
)
FLAVORS = (WIREGUARD, AMNEZIAWG, AMNEZIAWG_2024)


def available(flavor: Flavor = WIREGUARD) -> str | None:
    """Why the test bed cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun for a userspace daemon"
    for tool in ("ip", "ping", "wg"):
        if shutil.which(tool) is None:
            return f"needs {tool} (tests/run.sh installs wireguard-tools, iproute2, iputils-ping)"
    return flavor.missing()


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
        if any(name in line for name in (*DAEMONS, *ENGINE_PROCESSES)) and PREFIX in line and " Z" not in line
    ]
    with open("/proc/mounts") as mounts:
        found += [f"mount {line.split()[1]}" for line in mounts if f"/{PREFIX}" in line]
    return found


@dataclass
class Host:
    """A network namespace with its own run directory for the flavor's sockets."""

    name: str
    rundir: Path
    flavor: Flavor

    def argv(self, *command: str) -> list[str]:
        mount_and_exec = f'mount --bind "$0" {self.flavor.rundir} && exec "$@"'
        return ["ip", "netns", "exec", self.name, "sh", "-c", mount_and_exec, str(self.rundir), *command]

    def run(self, *command: str, check: bool = True, timeout: float = 30, stdin: str | None = None) -> str:
        result = subprocess.run(
            self.argv(*command), capture_output=True, text=True, timeout=timeout, check=False, input=stdin
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} in {self.name} failed: {result.stderr.strip()}")
        return result.stdout


@dataclass
class Tunnel:
    """One userspace WireGuard or AmneziaWG interface on a host."""

    host: Host
    ifname: str
    private_key: str
    public_key: str
    address: str
    port: int = PORT
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        flavor = self.host.flavor
        self.process = subprocess.Popen(
            self.host.argv(flavor.daemon, "-f", self.ifname), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        socket = self.host.rundir / f"{self.ifname}.sock"
        deadline = time.monotonic() + 10
        while not socket.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"{flavor.daemon} {self.ifname} did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None
        with contextlib.suppress(FileNotFoundError):
            (self.host.rundir / f"{self.ifname}.sock").unlink()

    def wg(self, *args: str) -> str:
        """The flavor's tool (wg or awg) inside this tunnel's namespace."""
        return self.host.run(self.host.flavor.tool, *args)

    def counters(self, peer_public_key: str) -> tuple[int, int]:
        """(rx, tx) of one peer, from this interface's own `show` counters."""
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
    flavor: Flavor = WIREGUARD
    tag: str = field(default_factory=lambda: secrets.token_hex(3))

    def __post_init__(self) -> None:
        self.prefix = f"{PREFIX}{self.tag}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{self.tag}-"))
        MADE.add(self.prefix)
        MADE.add(str(self.dir))
        self.server = self._host("s")
        self.servers: list[Tunnel] = []
        self.peers: list[Client] = []
        # The flavor's tool under its usual name (awg, or wg), for awgd's tool = "auto" to find
        # on PATH: put `bin` in front of PATH (`path_env`).
        self.bin = self.dir / "bin"
        self.bin.mkdir()
        name = "wg" if self.flavor.tool == "wg" else "awg"
        (self.bin / name).symlink_to(shutil.which(self.flavor.tool) or self.flavor.tool)

    def path_env(self) -> dict[str, str]:
        """The environment in which `awg` (or `wg`) is this bed's flavor's tool."""
        return {"PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}

    # ---- building ---------------------------------------------------------------------

    def _host(self, suffix: str) -> Host:
        rundir = self.dir / suffix
        rundir.mkdir()
        return Host(f"{self.prefix}{suffix}", rundir, self.flavor)

    def _keypair(self) -> tuple[str, str]:
        private = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
        SECRETS.add(private)
        public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True, check=True).stdout
        return private, public.strip()

    def up(self) -> TestBed:
        Path(self.flavor.rundir).mkdir(parents=True, exist_ok=True)
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

    def _interface_section(self, tunnel: Tunnel, port: int | None) -> list[str]:
        lines = ["[Interface]", f"PrivateKey = {tunnel.private_key}"]
        if port is not None:
            lines.append(f"ListenPort = {port}")
        lines += [f"{name} = {value}" for name, value in self.flavor.obfuscation.items()]
        return lines

    def server_config(self, server: Tunnel, clients: list[Client] | None = None) -> str:
        """The server interface's config, in `setconf` form (no Address lines), with its
        clients (or only `clients`)."""
        lines = self._interface_section(server, server.port)
        for client in self.peers if clients is None else clients:
            if self.server_of(client) is server:
                lines += [
                    "",
                    "[Peer]",
                    f"PublicKey = {client.tunnel.public_key}",
                    f"AllowedIPs = {client.tunnel.address}/32",
                ]
        return "\n".join(lines) + "\n"

    def _setconf(self, tunnel: Tunnel, config: str) -> None:
        path = self.dir / f"{tunnel.ifname}-{tunnel.host.name}.conf"
        path.write_text(config)
        path.chmod(0o600)
        tunnel.wg("setconf", tunnel.ifname, str(path))

    def start_server(self, server: Tunnel) -> None:
        server.start()
        self._setconf(server, self.server_config(server))
        server.host.run("ip", "addr", "add", f"{server.address}/24", "dev", server.ifname)
        server.host.run("ip", "link", "set", server.ifname, "up")

    def server_of(self, client: Client) -> Tunnel:
        return self.servers[(client.index - 1) % self.server_interfaces]

    def start_client(self, client: Client) -> None:
        tunnel, server = client.tunnel, self.server_of(client)
        tunnel.start()
        lines = self._interface_section(tunnel, None)
        lines += [
            "",
            "[Peer]",
            f"PublicKey = {server.public_key}",
            f"Endpoint = {client.server_ip}:{server.port}",
            f"AllowedIPs = {server.address}/32",
        ]
        self._setconf(tunnel, "\n".join(lines) + "\n")
        client.host.run("ip", "addr", "add", f"{tunnel.address}/24", "dev", tunnel.ifname)
        client.host.run("ip", "link", "set", tunnel.ifname, "up")

    # ---- events -------------------------------------------------------------------------

    def ping(self, client: Client, count: int) -> None:
        """`count` pings, paced so that none is lost; every one must be answered."""
        server = self.server_of(client)
        client.host.run("ping", "-c", str(count), "-i", "0.05", "-W", "5", "-q", server.address, timeout=60)

    def restart_server(self, server: Tunnel) -> None:
        """Kill and restart the daemon: a new ifindex and zeroed counters."""
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
        """`setconf` with the interface's own unchanged config: zeroes every peer."""
        self._setconf(server, server.wg("showconf", server.ifname))

    def syncconf_same(self, server: Tunnel) -> None:
        """`syncconf` with the interface's own unchanged config: keeps every counter."""
        path = self.dir / f"{server.ifname}-sync.conf"
        path.write_text(server.wg("showconf", server.ifname))
        path.chmod(0o600)
        server.wg("syncconf", server.ifname, str(path))

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
    """(rx, tx) on a plain WireGuard server for `pings` pings (WIREGUARD.expected)."""
    return WIREGUARD.expected(pings, handshake)
