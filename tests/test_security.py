"""The adversarial review's findings, each reproduced against the real daemon: who the caller
is, the socket's directory, the config's path, the connection quotas, the sample rate for
members, and a client that meets a malformed answer."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ScriptedTool, dump, key
from daemon import ROOT, Awgd, write_config
from test_daemon_life import awgd_cli

from awgd_client import AsyncClient, Client, ProtocolError, ServerStatus

A = key("A")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (users, groups, ownership)")


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


class Accounts:
    """Throwaway users and groups: a socket group, an admin group, a member and an admin."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.group, self.admin_group = f"awgst{tag}", f"awgsa{tag}"
        self.member, self.admin = f"awgsm{tag}", f"awgsx{tag}"

    def create(self) -> Accounts:
        _run("groupadd", self.group)
        _run("groupadd", self.admin_group)
        _run("useradd", "-M", "-G", self.group, self.member)
        _run("useradd", "-M", "-G", f"{self.group},{self.admin_group}", self.admin)
        return self

    def remove(self) -> None:
        for user in (self.member, self.admin):
            subprocess.run(["userdel", user], check=False, capture_output=True)
        for group in (self.group, self.admin_group):
            subprocess.run(["groupdel", group], check=False, capture_output=True)

    def ids(self, user: str) -> tuple[int, int]:
        import pwd

        entry = pwd.getpwnam(user)
        return entry.pw_uid, entry.pw_gid

    def gid(self, group: str) -> int:
        import grp

        return grp.getgrnam(group).gr_gid


@pytest.fixture
def accounts() -> Iterator[Accounts]:
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd")
    made = Accounts().create()
    try:
        yield made
    finally:
        made.remove()


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A root-owned directory everyone may traverse (the socket lives here)."""
    path = Path(tempfile.mkdtemp(prefix="awgd-sec-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def start_shared(daemons, tool: ScriptedTool, accounts: Accounts, public_dir: Path, **rpc: Any) -> Awgd:  # type: ignore[no-untyped-def]
    tool.set(dump({"wg0": {A: (10, 10)}}))
    return daemons(
        tool.path,
        rpc={"socket": str(public_dir / "awgd.sock"), "group": accounts.group, "admin_groups": [accounts.admin_group]},
        **rpc,
    ).start()


# ---- who the caller is ---------------------------------------------------------------------

# Connects with the groups it has, and only then takes the admin group (as a process that
# exited and whose pid was reused by an admin's process would look in /proc afterwards).
SWAP_GROUPS_CLIENT = """
import json, os, socket, sys
path, member_uid, member_gid, groups, admin_gid = sys.argv[1:6]
os.setgroups([int(g) for g in groups.split(",")])
os.setresgid(int(member_gid), int(member_gid), 0)
os.setresuid(int(member_uid), int(member_uid), 0)  # saved uid 0: it may change its groups later
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(path)
os.setresuid(int(member_uid), 0, 0)
os.setgroups([int(g) for g in groups.split(",")] + [int(admin_gid)])
os.setresuid(int(member_uid), int(member_uid), 0)
print("connected", flush=True)
sys.stdin.readline()
sock.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "traffic.reset",
                         "params": {"public_key": sys.argv[6]}}).encode() + b"\\n")
print(sock.makefile().readline().strip())
"""


@root_only
def test_groups_are_those_of_connect_time(daemons, scripted_tool, accounts, public_dir) -> None:  # type: ignore[no-untyped-def]
    daemon = start_shared(daemons, scripted_tool, accounts, public_dir)
    assert daemon.process is not None
    scripted_tool.set(dump({"wg0": {A: (30, 30)}}))
    daemon.result("traffic.sample")
    uid, gid = accounts.ids(accounts.member)
    daemon.process.send_signal(signal.SIGSTOP)  # the connection waits in the backlog, unaccepted
    try:
        client = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SWAP_GROUPS_CLIENT,
                daemon.socket,
                str(uid),
                str(gid),
                str(accounts.gid(accounts.group)),
                str(accounts.gid(accounts.admin_group)),
                A,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "connected"  # and has taken the admin group since
    finally:
        daemon.process.send_signal(signal.SIGCONT)
    out, _ = client.communicate("go\n", timeout=30)
    answer = json.loads(out)
    assert answer["error"]["code"] == -32002, "groups taken after connect() made the caller an admin"
    assert daemon.result("traffic.get", public_key=A)["period"]["total_bytes"] == 40  # not reset
    assert daemon.result("traffic.reset", public_key=A)["removed"]["total_bytes"] == 40  # root still may


# ---- the socket's directory ----------------------------------------------------------------


@root_only
@pytest.mark.parametrize("how", ["owned by a user", "group-writable", "an ancestor owned by a user"])
def test_socket_directory_must_be_roots_alone(daemons, scripted_tool, tmp_path, how: str) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (1, 1)}}))
    top = Path(tempfile.mkdtemp(prefix="awgd-sockdir-"))
    try:
        top.chmod(0o755)
        run_dir = top / "run" / "awgd"
        run_dir.mkdir(parents=True)
        (top / "run").chmod(0o755)
        run_dir.chmod(0o755)
        if how == "owned by a user":
            os.chown(run_dir, 65534, 65534)
        elif how == "group-writable":
            run_dir.chmod(0o775)
        else:
            os.chown(top / "run", 65534, 65534)
        daemon = daemons(scripted_tool.path, rpc={"socket": str(run_dir / "awgd.sock"), "group": "nogroup"})
        calls = scripted_tool.calls
        daemon.start(wait_ready=False)
        assert daemon.process is not None and daemon.process.wait(timeout=30) == 1
        refused = [line for line in daemon.log_text().splitlines() if "cannot start" in line]
        assert len(refused) == 1 and "refusing the socket" in refused[0], daemon.log_text()
        assert scripted_tool.calls == calls, "it sampled before refusing"
        assert not (run_dir / "awgd.sock").exists()
    finally:
        shutil.rmtree(top, ignore_errors=True)


@root_only
def test_socket_directory_is_made_0755_and_sticky_tmp_is_fine(daemons, scripted_tool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (1, 1)}}))
    top = Path(tempfile.mkdtemp(prefix="awgd-sticky-"))
    try:
        top.chmod(0o1777)  # like /tmp: others may add entries, but not replace ours
        path = top / "new" / "deeper" / "awgd.sock"
        daemon = daemons(scripted_tool.path, rpc={"socket": str(path)}).start()
        assert (path.parent.stat().st_mode & 0o7777, path.parent.stat().st_uid) == (0o755, 0)
        assert path.stat().st_mode & 0o777 == 0o660
        assert daemon.result("server.status")["healthy"] is True
    finally:
        shutil.rmtree(top, ignore_errors=True)


# ---- the config's path -----------------------------------------------------------------------

RENAME_EXCHANGE = 2
AT_FDCWD = -100


def exchange(a: Path, b: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(AT_FDCWD, bytes(a), AT_FDCWD, bytes(b), RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")


@root_only
def test_config_under_a_users_directory_is_refused_even_while_swapped(tmp_path: Path) -> None:
    """A user who owns an ancestor directory swaps a root-owned config for her own, in a loop."""
    top = Path(tempfile.mkdtemp(prefix="awgd-cfg-"))
    try:
        top.chmod(0o755)
        home = top / "home"  # hers
        home.mkdir(mode=0o755)
        good, evil = home / "etc", home / "evil"
        for directory, tool in ((good, "/usr/bin/wg"), (evil, "/tmp/her-script")):
            directory.mkdir(mode=0o755)
            (directory / "awgd.toml").write_text(f'[wireguard]\ntool = "{tool}"\n')
            (directory / "awgd.toml").chmod(0o644)
        os.chown(evil / "awgd.toml", 65534, 65534)
        os.chown(evil, 65534, 65534)
        os.chown(home, 65534, 65534)
        stop = threading.Event()

        def swap() -> None:
            while not stop.is_set():
                exchange(good, evil)

        swapper = threading.Thread(target=swap)
        swapper.start()
        try:
            results = [awgd_cli("--config", str(good / "awgd.toml"), "--check-config") for _ in range(20)]
        finally:
            stop.set()
            swapper.join()
        accepted = [r for r in results if r.returncode == 0]
        assert accepted == [], f"{len(accepted)} of {len(results)} starts accepted a config under her directory"
        assert all(r.returncode == 78 and "runs as root" in r.stderr for r in results)
        assert all("owned by uid 65534" in r.stderr for r in results)
    finally:
        shutil.rmtree(top, ignore_errors=True)


@root_only
def test_reload_goes_through_the_same_checks(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (1, 1)}}))
    daemon = daemons(scripted_tool.path).start()
    assert daemon.notify is not None and daemon.process is not None
    daemon.dir.chmod(0o775)
    try:
        daemon.process.send_signal(signal.SIGHUP)
        daemon.notify.wait_for("RELOADING=1")
        daemon.notify.wait_for("READY=1")
    finally:
        daemon.dir.chmod(0o755)
    assert "reload rejected" in daemon.log_text() and "writable by group or others" in daemon.log_text()


@root_only
def test_a_symlinked_config_in_roots_directories_is_read(tmp_path: Path) -> None:
    real = tmp_path / "real.toml"
    write_config(real, {"sampling": {"schedule": "* * * * * */7"}})
    link = tmp_path / "sub" / "awgd.toml"
    link.parent.mkdir()
    link.symlink_to("../real.toml")
    result = awgd_cli("--config", str(link), "--check-config")
    assert result.returncode == 0, result.stderr
    assert "*/7" in result.stdout


# ---- connection quotas ---------------------------------------------------------------------

HOLD_CLIENT = """
import json, socket, sys
path, count = sys.argv[1], int(sys.argv[2])
held, refused = [], []
for _ in range(count):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    try:
        sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"server.status"}\\n')
    except OSError:
        pass  # refused and closed already: its one line is still there to read
    answer = json.loads(sock.makefile().readline())
    if "result" in answer:
        held.append(sock)
    else:
        refused.append(answer["error"]["message"])
        sock.close()
print(json.dumps({"held": len(held), "refused": refused}), flush=True)
sys.stdin.read()  # hold them until told to go
"""


def hold(accounts: Accounts, user: str, path: str, count: int) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    process = subprocess.Popen(
        [
            "setpriv",
            f"--reuid={user}",
            f"--regid={user}",
            "--init-groups",
            sys.executable,
            "-c",
            HOLD_CLIENT,
            path,
            str(count),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, json.loads(process.stdout.readline())


@root_only
def test_one_member_cannot_take_every_connection(daemons, scripted_tool, accounts, public_dir) -> None:  # type: ignore[no-untyped-def]
    daemon = start_shared(daemons, scripted_tool, accounts, public_dir)
    member, got = hold(accounts, accounts.member, daemon.socket, 70)
    try:
        assert got["held"] == 64
        assert set(got["refused"]) == {"too many connections from this user"} and len(got["refused"]) == 6
        admin, admin_got = hold(accounts, accounts.admin, daemon.socket, 10)
        admin.communicate("")
        assert admin_got["held"] == 10
        assert daemon.result("server.status")["healthy"] is True
    finally:
        member.communicate("")


@root_only
def test_reserved_connections_for_root_and_admins(daemons, scripted_tool, accounts, public_dir) -> None:  # type: ignore[no-untyped-def]
    daemon = start_shared(daemons, scripted_tool, accounts, public_dir)
    daemon.stop()
    text = daemon.config.read_text().replace("[rpc]", "[rpc]\nmax_connections_per_uid = 1000")
    daemon.config.write_text(text)
    daemon.start()
    member, got = hold(accounts, accounts.member, daemon.socket, 250)
    try:
        assert got["held"] == 248 and got["refused"] == ["too many connections"] * 2
        admin, admin_got = hold(accounts, accounts.admin, daemon.socket, 8)
        try:
            assert admin_got["held"] == 8
            # All 256 taken: even root is refused now.
            (line,) = daemon.raw_lines([b'{"jsonrpc":"2.0","id":1,"method":"server.status"}'])
            assert json.loads(line)["error"] == {"code": -32000, "message": "too many connections"}
        finally:
            admin.communicate("")
        assert daemon.result("server.status")["healthy"] is True  # root gets one of the reserved
    finally:
        member.communicate("")


def test_a_burst_of_256_connections_all_get_in(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (1, 1)}}))
    daemon = daemons(scripted_tool.path).start()
    assert daemon.process is not None
    barrier = threading.Barrier(257)
    socks: list[socket.socket | None] = [None] * 256
    failures: list[str] = []

    def connect(index: int) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(20)  # as clients do: a timeout makes connect() non-blocking underneath
        barrier.wait()
        try:
            sock.connect(daemon.socket)
            socks[index] = sock
        except OSError as exc:
            failures.append(repr(exc))
            sock.close()

    threads = [threading.Thread(target=connect, args=(i,)) for i in range(256)]
    for thread in threads:
        thread.start()
    # The daemon busy for a moment (here: stopped) while they all connect: the kernel queues
    # them in the listen backlog, which must hold the whole burst.
    daemon.process.send_signal(signal.SIGSTOP)
    try:
        barrier.wait()
        for thread in threads:
            thread.join()
    finally:
        daemon.process.send_signal(signal.SIGCONT)
    try:
        assert failures == []
        for sock in socks[::17]:  # accepted and served
            assert sock is not None
            sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"server.status"}\n')
            assert b'"result"' in sock.recv(65536)
        extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        extra.settimeout(20)
        extra.connect(daemon.socket)
        assert json.loads(extra.recv(4096))["error"] == {"code": -32000, "message": "too many connections"}
        extra.close()
    finally:
        for sock in socks:
            if sock is not None:
                sock.close()


# ---- traffic.sample for members --------------------------------------------------------------

SAMPLE_CLIENT = """
import json, socket, sys
for _ in range(int(sys.argv[2])):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(sys.argv[1])
    sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"traffic.sample"}\\n')
    print(json.loads(sock.makefile().readline())["result"]["sampled_at"])
"""


@root_only
def test_members_sample_at_fresh_rate_admins_at_once(daemons, scripted_tool, accounts, public_dir) -> None:  # type: ignore[no-untyped-def]
    daemon = start_shared(daemons, scripted_tool, accounts, public_dir)

    def samples_by(user: str, count: int) -> list[str]:
        out = subprocess.run(
            [
                "setpriv",
                f"--reuid={user}",
                f"--regid={user}",
                "--init-groups",
                sys.executable,
                "-c",
                SAMPLE_CLIENT,
                daemon.socket,
                str(count),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        return out.split()

    calls = scripted_tool.calls
    times = samples_by(accounts.member, 10)
    assert scripted_tool.calls - calls <= 1  # within 5 s of the start-up sample: joined, no run at all
    assert len(set(times)) == 1
    calls = scripted_tool.calls
    samples_by(accounts.admin, 3)
    assert scripted_tool.calls - calls == 3


# ---- a malformed answer ----------------------------------------------------------------------


class Impostor:
    """Something on the socket that speaks JSON lines but answers `result` with what it is told."""

    def __init__(self, path: Path, result: Any) -> None:
        self.path = path
        self.result = result
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            for line in conn.makefile("rb"):
                request = json.loads(line)
                conn.sendall(
                    json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": self.result}).encode() + b"\n"
                )

    def close(self) -> None:
        self.server.close()


MALFORMED = [
    None,
    [],
    {"version": "0.1.0"},
    {"rx_bytes": "many"},
    "a string",
]


@pytest.mark.parametrize("result", MALFORMED, ids=["null", "list", "fields missing", "wrong type", "string"])
def test_a_malformed_answer_is_a_protocol_error(tmp_path: Path, result: Any) -> None:
    impostor = Impostor(tmp_path / "s.sock", result)
    try:
        with Client(str(impostor.path)) as client:
            for call in (
                client.server_status,
                lambda: client.traffic(A),
                client.traffic_list,
                client.sample,
                lambda: client.history(A),
                lambda: client.reset(A),
            ):
                with pytest.raises(ProtocolError, match="malformed answer"):
                    call()

        async def run() -> None:
            async with AsyncClient(str(impostor.path)) as client:
                with pytest.raises(ProtocolError):
                    await client.server_status()
                with pytest.raises(ProtocolError):
                    await client.traffic(A)

        asyncio.run(run())
        for args in (["status"], ["peers"], ["peer", A], ["history", A], ["sample"], ["reset", A, "--yes"]):
            done = subprocess.run(
                [sys.executable, "-m", "awgd_client", "--socket", str(impostor.path), *args],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "client")])},
                check=False,
            )
            assert done.returncode == 3, (args, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("awgctl: malformed answer from awgd"), done.stderr
    finally:
        impostor.close()


def test_a_well_formed_answer_still_parses() -> None:
    status = {
        "version": "0.1.0",
        "started_at": "2026-11-01T00:00:00+03:00",
        "uptime_seconds": 5,
        "healthy": True,
        "tool": "awg",
        "timezone": "Europe/Moscow",
        "tracking_since": None,
        "period": {"start": "2026-11-01T00:00:00+03:00", "end": "2026-12-01T00:00:00+03:00"},
        "sampler": {
            "schedule": "* * * * *",
            "last_sample_at": None,
            "last_success_at": None,
            "next_sample_at": None,
            "consecutive_failures": 0,
            "last_error": None,
        },
        "interfaces": [],
    }
    assert ServerStatus.from_json(status).ledger is None  # an older daemon: optional fields absent
    with pytest.raises(ProtocolError, match=r"result\.sampler\.consecutive_failures"):
        ServerStatus.from_json({**status, "sampler": {**status["sampler"], "consecutive_failures": True}})
    with pytest.raises(ProtocolError, match=r"result\.period\.start"):
        ServerStatus.from_json({**status, "period": {"start": "yesterday", "end": None}})
