"""Amnezia's AmneziaWG server container, for real: a Docker engine of the test's own, an image
laid out as Amnezia's, and containers wired to each other.

- `DockerEngine` runs Debian's dockerd with its own data root, exec root and socket, with no
  firewall rules and no bridge (`--iptables=false --bridge=none`), so it changes nothing on the
  machine; `stop()` stops it and removes all it made. Clients find it through DOCKER_HOST.
- `build_image` makes the image offline (no registry is reachable here) from a local root file
  system, as Amnezia's image is laid out: a busybox userland (so `ip` is busybox's) with
  iproute2's `tc`, amneziawg-go
  in userspace, the tool as `awg` (with `wg` a link to it, as in amneziawg-go's images) or only
  as `wg` (older images), the interface configured at start from /opt/amnezia/awg/wg0.conf, and
  the clients' names in /opt/amnezia/awg/clientsTable.
- `AmneziaServer` runs the server container in one of the Amnezia app's two layouts (LEGACY:
  `amnezia-awg` with `wg0.conf`; CURRENT: `amnezia-awg2` with `awg0.conf`, as the app deploys
  it since AmneziaWG 2), and client containers, each linked to it by a veth pair the test makes
  (the containers have no network of Docker's).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from wgbed import AMNEZIAWG, MADE, PREFIX, SECRETS, Flavor

AMNEZIA_DIR = "/opt/amnezia/awg"
SERVER_NAME = "amnezia-awg"
# The Amnezia app's layouts: (container, interface, whose config file is INTERFACE.conf).
LEGACY = ("amnezia-awg", "wg0")
CURRENT = ("amnezia-awg2", "awg0")
SERVER_ADDRESS = "10.8.1.1"
UNUSED_ADDRESS = "10.8.1.254"  # in wg0's subnet, no peer's
START_TIMEOUT = 60.0

# The container's entry point, as Amnezia's start.sh does it without awg-quick: amneziawg-go in
# userspace, the interface configured from its config file (stripped of what only awg-quick
# reads), its address from the file's Address line.
START_SH = """#!/bin/sh
IFACE=${1:-wg0}
CONF=/opt/amnezia/awg/$IFACE.conf
TOOL=$(command -v awg || command -v wg)
mkdir -p /var/run/amneziawg
amneziawg-go -f $IFACE &
DAEMON=$!
while [ ! -S /var/run/amneziawg/$IFACE.sock ]; do sleep 0.1; done
grep -v -i -E '^[[:space:]]*(Address|DNS|MTU|Table|SaveConfig|PreUp|PostUp|PreDown|PostDown)[[:space:]]*=' $CONF \\
    > /tmp/$IFACE.conf
$TOOL setconf $IFACE /tmp/$IFACE.conf
ADDRESS=$(grep -i -E '^[[:space:]]*Address[[:space:]]*=' $CONF | head -n 1 | sed 's/^[^=]*=[[:space:]]*//')
ip address add $ADDRESS dev $IFACE
ip link set $IFACE up
touch /tmp/ready
wait $DAEMON
"""


def available() -> str | None:
    """Why the Amnezia container tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (a Docker engine)"
    for tool in ("dockerd", "docker", "busybox", "nsenter", "ping", "iptables-save"):
        if shutil.which(tool) is None:
            return f"needs {tool} (tests/run.sh installs docker.io, busybox-static and iptables)"
    return None


class DockerEngine:
    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-docker-{self.tag}-"))
        MADE.add(str(self.dir))
        self.socket = self.dir / "docker.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": f"unix://{self.socket}"}

    def start(self) -> DockerEngine:
        log = open(self.dir / "dockerd.log", "ab")  # noqa: SIM115 - dockerd writes it for its whole life
        self.process = subprocess.Popen(
            [
                "dockerd",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                f"--data-root={self.dir / 'data'}",
                f"--exec-root={self.dir / 'exec'}",
                f"--pidfile={self.dir / 'dockerd.pid'}",
                f"--host=unix://{self.socket}",
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while self.docker("version", check=False).returncode != 0:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"dockerd did not start: {(self.dir / 'dockerd.log').read_text()[-2000:]}")
            time.sleep(0.2)
        return self

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["docker", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.env},
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {result.stderr.strip()}")
        return result

    def stop(self) -> None:
        """Stop the engine (its containers stop with it) and leave nothing behind."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        _kill_matching(str(self.dir))  # containerd and shims started under our roots, if any outlived it
        for mount in reversed(_mounts_under(self.dir)):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _mounts_under(directory: Path) -> list[str]:
    with open("/proc/mounts") as mounts:
        return [line.split()[1] for line in mounts if line.split()[1].startswith(str(directory))]


def _kill_matching(text: str) -> None:
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=False).stdout
    for line in listing.splitlines()[1:]:
        pid, _, args = line.strip().partition(" ")
        if text in args and int(pid) != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def _libraries(binary: str) -> list[str]:
    """The shared libraries a binary links (the AmneziaWG binaries link only libc)."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            found.append(path)
    return found


def build_image(engine: DockerEngine, flavor: Flavor, tool: str) -> str:
    """An Amnezia-style image of `flavor`'s binaries, with the tool as `awg` (and `wg` linking to
    it) when `tool` is "awg", or as `wg` alone when it is "wg"; returns its tag."""
    root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-image-", dir=engine.dir))
    for directory in ("bin", "usr/bin", "tmp", "var/run", "opt/amnezia/awg", "etc", "proc", "sys", "dev"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", root / "bin/busybox")
    applets = subprocess.run(["busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    shutil.copy2(shutil.which(flavor.daemon) or flavor.daemon, root / "usr/bin/amneziawg-go")
    shutil.copy2(shutil.which(flavor.tool) or flavor.tool, root / "usr/bin" / tool)
    if tool == "awg":
        (root / "usr/bin/wg").symlink_to("awg")
    # iproute2's tc, as Amnezia's images have it (amneziawg-go's Dockerfile: apk add iproute2);
    # `ip` stays busybox's, as in the oldest images.
    tc = shutil.which("tc") or "/usr/sbin/tc"
    shutil.copy2(tc, root / "usr/bin/tc")
    for library in {*_libraries(flavor.daemon), *_libraries(flavor.tool), *_libraries(tc)}:
        target = root / library.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(library, target)
    (root / "opt/amnezia/start.sh").write_text(START_SH)
    (root / "opt/amnezia/start.sh").chmod(0o755)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    tag = f"{PREFIX}-amnezia-{flavor.id}-{tool}:{engine.tag}"
    archive = root.with_suffix(".tar")
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname=".")
    engine.docker("import", "--change", "ENV PATH=/usr/bin:/bin", str(archive), tag)
    shutil.rmtree(root)
    archive.unlink()
    return tag


@dataclass
class Peer:
    name: str  # its container's name
    private_key: str
    public_key: str
    address: str
    label: str  # as the Amnezia app shows it
    preshared_key: str | None = None  # in its own config (the server learns it from peer.add)
    outer: str = ""  # the veth ends, host names before they move
    inner: str = ""


@dataclass
class AmneziaServer:
    """`amnezia-awg` and its clients. Everything is made in `up()` and removed in `down()`."""

    engine: DockerEngine
    image: str
    flavor: Flavor
    clients: int = 2
    on_server: int | None = None  # how many of the clients wg0.conf lists (all by default)
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    layout: tuple[str, str] = LEGACY  # the server's container and interface

    def __post_init__(self) -> None:
        self.name, self.iface = self.layout
        self.private_key, self.public_key = _keypair()
        self.peers = [
            Peer(f"{PREFIX}{self.tag}c{n}", *_keypair(), f"10.8.1.{n + 1}", f"Client {n}")
            for n in range(1, self.clients + 1)
        ]
        for n, peer in enumerate(self.peers, start=1):
            peer.outer, peer.inner = f"{PREFIX}{self.tag}v{n}", f"{PREFIX}{self.tag}u{n}"
        MADE.add(f"{PREFIX}{self.tag}")
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-amnezia-", dir=self.engine.dir))

    # ---- the files Amnezia keeps ----------------------------------------------------------

    def _interface(self, private_key: str, address: str, port: int | None) -> list[str]:
        lines = ["[Interface]", f"PrivateKey = {private_key}", f"Address = {address}/24"]
        if port is not None:
            lines.append(f"ListenPort = {port}")
        return lines + [f"{name} = {value}" for name, value in self.flavor.obfuscation.items()]

    def server_config(self) -> str:
        lines = self._interface(self.private_key, SERVER_ADDRESS, 51820)
        for index, peer in enumerate(self.peers[: self.on_server]):
            # The first client is named in clientsTable only; the others by a comment as well.
            lines += ["", *([f"# Name = {peer.label}"] if index else []), "[Peer]", f"PublicKey = {peer.public_key}"]
            lines.append(f"AllowedIPs = {peer.address}/32")
        return "\n".join(lines) + "\n"

    def clients_table(self) -> str:
        rows = [
            {"clientId": p.public_key, "userData": {"clientName": p.label, "creationDate": "Fri Nov 27 2026"}}
            for p in self.peers[:1]
        ]
        return json.dumps(rows)

    def client_config(self, peer: Peer, index: int) -> str:
        lines = self._interface(peer.private_key, peer.address, None)
        lines += ["", "[Peer]", f"PublicKey = {self.public_key}", f"Endpoint = 10.201.{index}.1:51820"]
        if peer.preshared_key:
            lines.append(f"PresharedKey = {peer.preshared_key}")
        lines.append(f"AllowedIPs = {SERVER_ADDRESS}/32")
        return "\n".join(lines) + "\n"

    # ---- the containers -------------------------------------------------------------------

    def up(self) -> AmneziaServer:
        try:
            files = {f"{self.iface}.conf": self.server_config(), "clientsTable": self.clients_table()}
            self._create(self.name, files, self.iface)
            for index, peer in enumerate(self.peers, start=1):
                self._create(peer.name, {"wg0.conf": self.client_config(peer, index)})
            self.start(self.name)
            for peer in self.peers:
                self.start(peer.name)
        except BaseException:
            self.down()
            raise
        return self

    def _create(self, name: str, files: dict[str, str], iface: str = "wg0") -> None:
        docker = self.engine.docker
        # Amnezia runs it --privileged; this machine's root lacks CAP_SYS_RESOURCE, which that
        # asks for, so the container gets what amneziawg-go needs: NET_ADMIN and the tun device.
        docker(
            "create",
            "--name",
            name,
            "--cap-add",
            "NET_ADMIN",
            "--device",
            "/dev/net/tun",
            "--network",
            "none",
            # Fresh at every start, as after a reboot: no stale control socket or ready mark.
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/var/run/amneziawg",
            self.image,
            "/opt/amnezia/start.sh",
            iface,
        )
        for file_name, text in files.items():
            self._copy(name, file_name, text)

    def _copy(self, name: str, file_name: str, text: str) -> None:
        local = self.workdir / f"{name}-{file_name}"
        local.write_text(text)
        local.chmod(0o600)
        self.engine.docker("cp", str(local), f"{name}:{AMNEZIA_DIR}/{file_name}")

    def become(self, peer: Peer, config: str) -> None:
        """The client container restarted as a device with exactly `config` as its file (the
        container's start strips it as awg-quick does, and sets its address); a route to the
        server's address through the tunnel, as awg-quick adds one for the allowed IPs."""
        self._copy(peer.name, "wg0.conf", config)
        self.restart(peer.name)
        _in_netns(self.pid(peer.name), "ip", "route", "add", f"{SERVER_ADDRESS}/32", "dev", "wg0", check=True)

    def start(self, name: str) -> None:
        """Start a container (again), wait for its interface, and wire it to its peers."""
        self.engine.docker("start", name)
        self.wait_ready(name)
        self.wire()

    def wait_ready(self, name: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while self.engine.docker("exec", name, "test", "-e", "/tmp/ready", check=False).returncode != 0:
            if time.monotonic() > deadline:
                logs = self.engine.docker("logs", name, check=False)
                raise RuntimeError(f"{name} did not come up: {logs.stdout[-1000:]} {logs.stderr[-1000:]}")
            time.sleep(0.1)
        self._prime(name)

    def _prime(self, name: str) -> None:
        """One packet into wg0 for an address no peer has, which amneziawg-go reads and drops.

        amneziawg-go 3.x reads the interface in a loop that takes the S4 padding before it waits
        for a packet; at start it waits with the padding of an unconfigured device (0), so the
        first packet read after `setconf` leaves without its S4 prefix and the other side cannot
        decrypt it: tx counts it, the other side's rx does not, and the first ping of a fresh
        container is lost on each side. Hosts with IPv6 on the interface never see this (the
        kernel's router solicitation is that first packet); Docker turns IPv6 off in containers.
        """
        _in_netns(self.pid(name), "ping", "-c", "1", "-W", "0.2", UNUSED_ADDRESS)

    def pid(self, name: str) -> int:
        return int(self.engine.docker("inspect", "-f", "{{.State.Pid}}", name).stdout.strip())

    def running(self, name: str) -> bool:
        return self.engine.docker("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip() == "true"

    def wire(self) -> None:
        """A veth pair between the server and each running client whose link is missing
        (a container's network namespace is new at every start)."""
        if not self.running(self.name):
            return
        server = self.pid(self.name)
        for index, peer in enumerate(self.peers, start=1):
            if not self.running(peer.name):
                continue
            client = self.pid(peer.name)
            server_has = _in_netns(server, "ip", "link", "show", peer.outer).returncode == 0
            client_has = _in_netns(client, "ip", "link", "show", peer.inner).returncode == 0
            if server_has and client_has:
                continue
            for pid, end in ((server, peer.outer), (client, peer.inner)):
                _in_netns(pid, "ip", "link", "del", end)
            subprocess.run(["ip", "link", "add", peer.outer, "type", "veth", "peer", "name", peer.inner], check=True)
            subprocess.run(["ip", "link", "set", peer.outer, "netns", str(server)], check=True)
            subprocess.run(["ip", "link", "set", peer.inner, "netns", str(client)], check=True)
            for pid, end, address in (
                (server, peer.outer, f"10.201.{index}.1/30"),
                (client, peer.inner, f"10.201.{index}.2/30"),
            ):
                _in_netns(pid, "ip", "addr", "add", address, "dev", end, check=True)
                _in_netns(pid, "ip", "link", "set", end, "up", check=True)
            for pid, end in ((server, peer.outer), (client, peer.inner)):
                _wait_operational(pid, end)

    def pings(self, peer: Peer, count: int = 2) -> bool:
        """Whether every one of `count` pings came back."""
        done = _in_netns(self.pid(peer.name), "ping", "-c", str(count), "-i", "0.2", "-W", "2", "-q", SERVER_ADDRESS)
        return done.returncode == 0

    def file(self, name: str) -> str:
        """A file of the server's /opt/amnezia/awg, as it is now."""
        return self.engine.docker("exec", self.name, "cat", f"{AMNEZIA_DIR}/{name}").stdout

    def ping(self, peer: Peer, count: int) -> None:
        """`count` pings from a client container to the server, every one answered."""
        _in_netns(
            self.pid(peer.name), "ping", "-c", str(count), "-i", "0.05", "-W", "5", "-q", SERVER_ADDRESS, check=True
        )

    def restart(self, name: str) -> None:
        self.engine.docker("restart", "-t", "1", name)
        self.wait_ready(name)
        self.wire()

    def daemon_pid(self) -> int:
        """The host pid of amneziawg-go in the server container."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.pid(self.name)), "-f", "amneziawg-go"],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.split()[0])

    def down(self) -> None:
        for name in [self.name, *(p.name for p in self.peers)]:
            self.engine.docker("rm", "-f", name, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _wait_operational(pid: int, device: str) -> None:
    """Until the kernel has activated a new link: before its link-watch work runs (which can
    wait up to a second) the device's queueing discipline is `noop`, which drops every packet,
    and a session's first packets (its handshake, its first pings) would be lost."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        shown = _in_netns(pid, "ip", "-o", "link", "show", "dev", device).stdout
        if "state UP" in shown and "qdisc noop" not in shown:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{device} in {pid} did not come up: {shown.strip()}")
        time.sleep(0.05)


def _in_netns(pid: int, *command: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """A host command in a container's network namespace."""
    result = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", *command], capture_output=True, text=True, timeout=60, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} in {pid}: {result.stderr.strip()}")
    return result


def _keypair() -> tuple[str, str]:
    private = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
    SECRETS.add(private)
    public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True, check=True).stdout
    return private, public.strip()


def serve(manifest: Path) -> None:
    """For tests/package.sh: an engine with `amnezia-awg` running (AmneziaWG 3.1, the tool as
    `awg`) until stdin closes. Writes `manifest` (JSON: the engine's socket, the peers' keys and
    names) once everything is up; removes everything at the end."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # cleans up as at the end
    engine = DockerEngine().start()
    try:
        server = AmneziaServer(engine, build_image(engine, AMNEZIAWG, "awg"), AMNEZIAWG).up()
        try:
            for peer in server.peers:
                server.ping(peer, 2)
            peers = [{"public_key": p.public_key, "label": p.label} for p in server.peers]
            written = manifest.with_suffix(".tmp")
            written.write_text(json.dumps({"socket": str(engine.socket), "peers": peers}))
            written.rename(manifest)
            sys.stdin.read()
        finally:
            server.down()
    finally:
        engine.remove()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "serve":
        sys.exit("usage: amnezia.py serve MANIFEST")
    serve(Path(sys.argv[2]))
