"""A throwaway PostgreSQL cluster for the fleet tests: Debian's postgresql-15 binaries, a
cluster made with initdb in the test's own directory, started and stopped with pg_ctl,
listening on 127.0.0.1 on a free port, removed with the directory."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BIN = Path(os.environ.get("AWGD_PG_BIN", "/usr/lib/postgresql/15/bin"))
ADMIN = "fleetadmin"
DATABASE = "awgd"
# initdb and postgres refuse to run as root: the cluster runs as Debian's postgres user.
OS_USER = "postgres"
START_TIMEOUT = 60


def problem() -> str | None:
    """Why a cluster cannot be made here (None: it can)."""
    if not (BIN / "initdb").exists():
        return f"needs Debian's postgresql-15 ({BIN}/initdb; tests/run.sh installs it)"
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        return "needs the postgres system user (Debian's postgresql-15 makes it)"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def own_root() -> Path:
    """A place for a cluster outside pytest's tmp_path: pytest sets its own base directory to
    0700 again whenever another pytest run starts, which would lock postgres out of a cluster
    that is restarted mid-test. Postgres.remove() takes it away."""
    return Path(tempfile.mkdtemp(prefix="awgd-pg-")) / "pg"


class Postgres:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.password = "admin-" + os.urandom(6).hex()
        root.mkdir(parents=True, exist_ok=True)
        entry = pwd.getpwnam(OS_USER)
        os.chown(root, entry.pw_uid, entry.pw_gid)
        root.chmod(0o755)
        for parent in root.parents:  # postgres must reach its directory
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o011)
        pwfile = root / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        self._as_postgres(
            BIN / "initdb",
            "-D",
            str(self.data),
            "-U",
            ADMIN,
            "--pwfile",
            str(pwfile),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        pwfile.unlink()
        self.start()
        self.psql("CREATE DATABASE awgd", database="postgres")

    def _as_postgres(self, *command: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", OS_USER, "--", *map(str, command)],
            check=check,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            cwd=self.root,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "start")

    def stop(self) -> None:
        self._as_postgres(BIN / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        return self._as_postgres(BIN / "pg_ctl", "-D", self.data, "status", check=False).returncode == 0

    def processes(self) -> list[int]:
        """The postmaster and every process it started."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return []
        postmaster = int(pid_file.read_text().split()[0])
        found = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False)
        children = found.stdout.split()
        return [postmaster, *map(int, children)]

    def kill(self) -> None:
        """SIGKILL to the postmaster and every backend at once: a crash, not a shutdown."""
        found = self.processes()
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + START_TIMEOUT
        while any(Path(f"/proc/{pid}").exists() for pid in found):
            assert time.monotonic() < deadline, "postgres did not die"
            time.sleep(0.05)

    def url(self, user: str = ADMIN, password: str | None = None, database: str = DATABASE) -> str:
        secret = self.password if password is None and user == ADMIN else password
        auth = user if secret is None else f"{user}:{secret}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def psql(
        self, sql: str, *, user: str = ADMIN, password: str | None = None, database: str = DATABASE, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        secret = self.password if password is None and user == ADMIN else password
        # The fleet's objects live in schema awgd: a session finds them as an operator's would
        # (docs/FLEET.md), with the path the mirror pins.
        path = "-c search_path=pg_catalog,awgd"
        env = {**os.environ, "PGPASSWORD": secret or "", "PGCONNECT_TIMEOUT": "10", "PGOPTIONS": path}
        command = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(
            [*command, "-U", user, "-d", database],
            input=sql,
            env=env,
            check=check,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def query(self, sql: str) -> list[list[str]]:
        out = self.psql(sql).stdout
        return [line.split("|") for line in out.splitlines() if line]

    def add_node(self, name: str) -> str:
        """A node's role (named like the node, in awgd_node); returns its password."""
        password = "node-" + os.urandom(6).hex()
        self.psql(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}' IN ROLE awgd_node;")
        return password

    def remove(self) -> None:
        if self.running():
            self.kill()
        shutil.rmtree(self.root, ignore_errors=True)
        if self.root.parent.name.startswith("awgd-pg-"):  # own_root's
            shutil.rmtree(self.root.parent, ignore_errors=True)


def serve(info: Path) -> None:
    """For tests/package.sh: a cluster with the fleet schema and the role of node `pkg-node`;
    its URL and password go to `info` (JSON); it is removed when stdin closes."""
    import json
    import sys

    root = Path(__file__).resolve().parents[2]
    sys.path[:0] = [str(root / "client"), str(root / "fleet")]
    from awgd_fleet.schema import schema_sql

    cluster = Postgres(own_root())
    try:
        cluster.psql(schema_sql())
        password = cluster.add_node("pkg-node")
        made = {"port": cluster.port, "password": password, "admin_url": cluster.url()}
        info.write_text(json.dumps(made))
        sys.stdin.read()
    finally:
        cluster.remove()
        shutil.rmtree(cluster.root.parent, ignore_errors=True)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "serve":
        sys.exit("usage: postgres.py serve INFO.json")
    serve(Path(sys.argv[2]))
