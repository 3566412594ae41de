"""Who may talk to the socket and who may reset: real users and groups, real SO_PEERCRED."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ScriptedTool, dump, key

import awgd_client

A = key("A")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates users and groups: needs root")

CLIENT = """
import json, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    sock.connect(sys.argv[1])
except PermissionError:
    print("EACCES"); raise SystemExit(0)
sock.sendall(sys.argv[2].encode() + b"\\n")
data = b""
while not data.endswith(b"\\n"):
    chunk = sock.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.decode().strip())
"""


class Accounts:
    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.socket_group = f"awgdt{tag}"
        self.admin_group = f"awgda{tag}"
        self.member = f"awgdm{tag}"
        self.admin = f"awgdx{tag}"
        self.stranger = f"awgds{tag}"
        self.fleet_group = f"awgdf{tag}"
        self.mirror = f"awgdr{tag}"

    def create(self) -> None:
        for group in (self.socket_group, self.admin_group, self.fleet_group):
            subprocess.run(["groupadd", group], check=True)
        subprocess.run(["useradd", "-M", "-G", f"{self.socket_group},{self.fleet_group}", self.mirror], check=True)
        subprocess.run(["useradd", "-M", "-G", self.socket_group, self.member], check=True)
        subprocess.run(["useradd", "-M", "-G", f"{self.socket_group},{self.admin_group}", self.admin], check=True)
        subprocess.run(["useradd", "-M", self.stranger], check=True)

    def remove(self) -> None:
        for user in (self.member, self.admin, self.stranger, self.mirror):
            subprocess.run(["userdel", user], check=False, capture_output=True)
        for group in (self.socket_group, self.admin_group, self.fleet_group):
            subprocess.run(["groupdel", group], check=False, capture_output=True)

    def ask(self, user: str, socket_path: str, message: dict) -> str:  # type: ignore[type-arg]
        result = subprocess.run(
            [
                "setpriv",
                f"--reuid={user}",
                f"--regid={user}",
                "--init-groups",
                "/usr/bin/python3",
                "-c",
                CLIENT,
                socket_path,
                json.dumps(message),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout.strip()


@pytest.fixture
def accounts() -> Iterator[Accounts]:
    if not shutil.which("setpriv") or not shutil.which("useradd"):
        pytest.skip("setpriv and useradd are needed")
    made = Accounts()
    made.create()
    try:
        yield made
    finally:
        made.remove()


def test_socket_access_and_admin_methods(daemons, scripted_tool: ScriptedTool, accounts: Accounts) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (1, 1)}}))
    public_dir = Path(tempfile.mkdtemp(prefix="awgd-access-"))
    public_dir.chmod(0o755)
    sock = str(public_dir / "awgd.sock")
    try:
        daemon = daemons(
            scripted_tool.path,
            rpc={
                "socket": sock,
                "group": accounts.socket_group,
                "admin_groups": [accounts.admin_group],
                "fleet_groups": [accounts.fleet_group],
            },
        ).start()
        stat = Path(sock).stat()
        import grp

        assert grp.getgrgid(stat.st_gid).gr_name == accounts.socket_group
        assert stat.st_mode & 0o777 == 0o660
        status = {"jsonrpc": "2.0", "id": 1, "method": "server.status"}
        reset = {"jsonrpc": "2.0", "id": 2, "method": "traffic.reset", "params": {"public_key": A}}
        assert accounts.ask(accounts.stranger, sock, status) == "EACCES"
        assert "result" in json.loads(accounts.ask(accounts.member, sock, status))
        denied = json.loads(accounts.ask(accounts.member, sock, reset))["error"]
        # The refusal says which setting grants what (issue 26, item 4).
        assert denied == {
            "code": -32002,
            "message": f"permission denied: traffic.reset manages the server; root and members of "
            f"rpc.admin_groups ({accounts.admin_group}) may call it, the socket's group only reads",
            "data": {"method": "traffic.reset", "admin_groups": [accounts.admin_group]},
        }
        # Every method that changes the server's peers is admin only, whatever its params.
        methods = ("peer.add", "peer.remove", "peer.update", "peer.block", "peer.unblock", "plan.set", "plan.clear")
        for n, method in enumerate(methods):
            change = {"jsonrpc": "2.0", "id": 10 + n, "method": method, "params": {"interface": "wg0", "public_key": A}}
            assert json.loads(accounts.ask(accounts.member, sock, change))["error"]["code"] == -32002, method
        events = {"jsonrpc": "2.0", "id": 20, "method": "events.list"}
        assert json.loads(accounts.ask(accounts.member, sock, events))["result"]["events"] == []  # a read
        # fleet.sync is the mirror's group's alone: not an admin's, not a reader's.
        sync = {
            "jsonrpc": "2.0",
            "id": 30,
            "method": "fleet.sync",
            "params": {"users": [], "as_of": "2026-12-07T00:00Z"},
        }
        for user in (accounts.admin, accounts.member):
            refused = json.loads(accounts.ask(user, sock, sync))["error"]
            assert refused["code"] == -32002 and "rpc.fleet_groups" in refused["message"], refused
            assert refused["data"] == {"method": "fleet.sync", "fleet_groups": [accounts.fleet_group]}
        assert json.loads(accounts.ask(accounts.mirror, sock, sync))["result"]["taken"] is True
        assert json.loads(accounts.ask(accounts.mirror, sock, reset))["error"]["code"] == -32002  # and no more
        # Admin only through a supplementary group.
        assert "removed" in json.loads(accounts.ask(accounts.admin, sock, reset))["result"]
        assert "removed" in daemon.result("traffic.reset", public_key=A)  # root
        # awgctl as a user outside the socket's group: exit 3 and what to do.
        client_copy = public_dir / "lib"
        shutil.copytree(Path(awgd_client.__file__).parent, client_copy / "awgd_client")
        for path in [public_dir, *client_copy.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)

        def as_stranger(*python_args: str) -> subprocess.CompletedProcess[str]:
            """Debian's python3 with the client library alone, as a user outside every group."""
            user = [f"--reuid={accounts.stranger}", f"--regid={accounts.stranger}", "--init-groups"]
            command = ["setpriv", *user, "env", f"PYTHONPATH={client_copy}", "/usr/bin/python3", *python_args]
            return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)

        refused = as_stranger("-m", "awgd_client", "--socket", sock, "status")
        assert refused.returncode == 3
        # The socket's own group, whatever it is called.
        wanted = f"awgctl: no permission to use {sock}: add your user to group {accounts.socket_group}"
        assert refused.stderr.strip() == wanted
        # An events subscription refused by the kernel raises at once, never waits in silence.
        subscribe = "import asyncio, sys\nfrom awgd_client import AsyncClient\n" + (
            "async def main():\n    async for _ in AsyncClient(sys.argv[1]).subscribe(0):\n        pass\n"
            "try:\n    asyncio.run(asyncio.wait_for(main(), 20))\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
        )
        raised = as_stranger("-c", subscribe, sock)
        assert raised.stdout.strip() == f"SocketPermissionDenied {wanted.removeprefix('awgctl: ')}"
        # Removed from the admin group: no longer admin at the next connection.
        subprocess.run(["gpasswd", "-d", accounts.admin, accounts.admin_group], check=True, capture_output=True)
        assert json.loads(accounts.ask(accounts.admin, sock, reset))["error"]["code"] == -32002
    finally:
        shutil.rmtree(public_dir, ignore_errors=True)
