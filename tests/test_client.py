"""The client library against a real daemon: typed results, errors, timeouts, concurrency."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ScriptedTool, dump, key

from awgd_client import (
    AmbiguousPeer,
    AsyncClient,
    AwgdTimeout,
    Client,
    DaemonUnavailable,
    InvalidParams,
    PeerTraffic,
    SamplingFailed,
    ServerStatus,
    UnknownPeer,
    format_ago,
    format_bytes,
    format_duration,
)

A, B = key("A"), key("B")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def daemon(daemons, scripted_tool: ScriptedTool):  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (100, 200), B: (1, 1)}, "wg1": {B: (1, 1)}}))
    running = daemons(scripted_tool.path).start()
    scripted_tool.set(dump({"wg0": {A: (1636, 2248), B: (1, 1)}, "wg1": {B: (1, 1)}}))
    running.result("traffic.sample")
    return running


def test_typed_results(daemon) -> None:  # type: ignore[no-untyped-def]
    with Client(daemon.socket) as client:
        status = client.server_status()
        assert isinstance(status, ServerStatus) and status.healthy
        assert status.period.start.utcoffset() == timedelta(hours=3)
        assert [i.name for i in status.interfaces] == ["wg0", "wg1"]
        peer = client.traffic(A)
        assert isinstance(peer, PeerTraffic)
        assert (peer.period.rx_bytes, peer.period.tx_bytes, peer.period.total_bytes) == (1536, 2048, 3584)
        assert peer.latest_handshake is not None and peer.latest_handshake.tzinfo is not None
        assert peer.online and peer.present and peer.session.rx_bytes == 1636
        listing = client.traffic_list(sort="tx", limit=2)
        assert listing.total == 3 and listing.peers[0].public_key == A and len(listing.peers) == 2
        history = client.history(A, granularity="day", limit=2)
        assert history.buckets[0].total_bytes == 3584
        assert client.sample().interfaces == 2
        assert client.reset(A).removed.total_bytes == 3584
        assert client.traffic(A, fresh=True).period.total_bytes == 0
        assert client.call("server.status")["healthy"] is True


def test_errors_are_exceptions(daemon, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    with Client(daemon.socket) as client:
        with pytest.raises(UnknownPeer) as unknown:
            client.traffic(key("Q"))
        assert unknown.value.code == -32001 and unknown.value.data == {"public_key": key("Q")}
        with pytest.raises(AmbiguousPeer) as ambiguous:
            client.traffic(B)
        assert ambiguous.value.interfaces == ["wg0", "wg1"]
        with pytest.raises(InvalidParams, match="public_key"):
            client.traffic("not a key")
        scripted_tool.set("", "Unable to list interfaces: Permission denied\n", 1)
        with pytest.raises(SamplingFailed) as failed:
            client.sample()
        assert "Permission denied" in failed.value.reason


def test_socket_from_the_environment(daemon, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AWGD_SOCKET", daemon.socket)
    assert Client().socket_path == daemon.socket
    assert Client("/elsewhere").socket_path == "/elsewhere"
    monkeypatch.delenv("AWGD_SOCKET")
    assert Client().socket_path == "/run/awgd/awgd.sock"


def test_daemon_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DaemonUnavailable, match="is awgd running"):
        Client(str(tmp_path / "none.sock")).server_status()

    async def go() -> None:
        async with AsyncClient(str(tmp_path / "none.sock")) as client:
            await client.server_status()

    with pytest.raises(DaemonUnavailable):
        asyncio.run(go())


def test_subscribe_gives_up_on_a_socket_that_stays_away_and_not_on_a_restart(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue 26, item 3: never a silent wait forever; but a restart is followed."""

    async def follow(path: str, give_up: float) -> None:
        async with asyncio.timeout(30):
            async for _ in AsyncClient(path).subscribe(0, give_up=give_up):
                pass

    with pytest.raises(DaemonUnavailable, match="is awgd running"):
        asyncio.run(follow(str(tmp_path / "none.sock"), 1.0))
    # A daemon that goes away for less than give_up: the iterator is still there when it is back.
    got: list[int] = []

    async def across_a_restart() -> None:
        async with AsyncClient(daemon.socket) as client:
            first = (await client.events(limit=1)).last_id

        async def take() -> None:
            async for event in AsyncClient(daemon.socket).subscribe(first, give_up=60):
                got.append(event.id)
                return

        taking = asyncio.ensure_future(take())
        await asyncio.to_thread(daemon.stop)
        await asyncio.sleep(1.5)  # longer than the first reconnect delays: they fail meanwhile
        await asyncio.to_thread(daemon.start)
        await asyncio.to_thread(daemon.result, "peer.block", interface="wg0", public_key=A)
        await asyncio.wait_for(taking, 30)

    asyncio.run(across_a_restart())
    assert len(got) == 1


def test_timeout_and_late_answer_never_misdelivered(daemon, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    (scripted_tool.dir / "sleep").write_text("2")
    client = Client(daemon.socket, timeout=0.5)
    with pytest.raises(AwgdTimeout):
        client.sample()
    client.timeout = 10
    assert client.traffic(A).public_key == A  # not the sample's late answer
    (scripted_tool.dir / "sleep").unlink()
    client.close()


def test_blocking_client_is_thread_safe(daemon) -> None:  # type: ignore[no-untyped-def]
    client = Client(daemon.socket)
    errors: list[BaseException] = []

    def work(public_key: str, interface: str) -> None:
        try:
            for _ in range(50):
                assert client.traffic(public_key, interface=interface).public_key == public_key
                assert client.server_status().healthy
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=((A, "wg0"), (B, "wg1"))[i % 2]) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    assert errors == []


def test_async_client_multiplexes_one_connection(daemon, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    async def go() -> None:
        async with AsyncClient(daemon.socket) as client:
            answers = await asyncio.gather(*(client.traffic(A if i % 2 else B, "wg0") for i in range(100)))
            assert [a.public_key for a in answers] == [A if i % 2 else B for i in range(100)]
            (scripted_tool.dir / "sleep").write_text("2")
            slow = AsyncClient(daemon.socket, timeout=0.5)
            slow_call = asyncio.ensure_future(slow.sample())
            quick = await asyncio.gather(*(slow.server_status() for _ in range(3)), return_exceptions=True)
            with pytest.raises(AwgdTimeout):
                await slow_call
            # The status calls were answered (or timed out) on their own: never with the sample's answer.
            assert all(isinstance(q, ServerStatus | AwgdTimeout) for q in quick)
            (scripted_tool.dir / "sleep").unlink()
            slow.timeout = 10
            assert (await slow.traffic(A, "wg0")).public_key == A
            await slow.aclose()

    asyncio.run(go())


def test_async_client_fails_pending_calls_and_reconnects(daemon, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    async def go() -> None:
        client = AsyncClient(daemon.socket, timeout=20)
        assert (await client.server_status()).healthy
        (scripted_tool.dir / "sleep").write_text("5")
        pending = asyncio.ensure_future(client.sample())
        await asyncio.sleep(0.5)  # the request is on the wire; now the daemon dies under it
        daemon.process.send_signal(signal.SIGKILL)
        with pytest.raises(DaemonUnavailable):
            await pending
        (scripted_tool.dir / "sleep").unlink()
        daemon.process.wait()
        Path(daemon.socket).unlink(missing_ok=True)
        daemon.start()
        assert (await client.server_status()).healthy  # the next call reconnects
        await client.aclose()

    asyncio.run(go())


def test_blocking_client_reconnects_after_a_daemon_restart(daemon) -> None:  # type: ignore[no-untyped-def]
    client = Client(daemon.socket)
    assert client.server_status().healthy
    assert daemon.stop() == 0
    daemon.start()
    assert client.server_status().healthy  # the old connection is dead: one reconnect
    client.close()


def test_formatting_helpers() -> None:
    assert format_bytes(0) == "0 B"
    assert format_bytes(1023) == "1023 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(5 * 1024**3) == "5.0 GiB"
    assert format_bytes(3 * 1024**6) == "3.0 EiB"
    assert format_duration(45) == "45 s"
    assert format_duration(180) == "3 min"
    assert format_duration(7500) == "2 h 5 min"
    assert format_duration(3 * 86400 + 4 * 3600) == "3 d 4 h"
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert format_ago(now - timedelta(minutes=3), now) == "3 min ago"
    assert format_ago(now - timedelta(seconds=2), now) == "just now"
    assert format_ago(now + timedelta(seconds=30), now) == "in 30 s"
    assert format_ago(now + timedelta(seconds=3), now) == "in 3 s"  # a 5 s schedule's next sample
    assert format_ago(now + timedelta(milliseconds=300), now) == "now"
    assert format_ago(None, now) == "never"


def test_counts_and_thresholds_as_people_write_them() -> None:
    from awgd_client.formatting import parse_fraction, plural

    assert plural(1, "peer") == "1 peer" and plural(0, "peer") == "0 peers" and plural(2, "peer") == "2 peers"
    assert parse_fraction("80%") == 0.8 and parse_fraction(" 95 % ") == 0.95 and parse_fraction("0.5") == 0.5
    for bad in ("80", "0%", "100%", "1", "abc", "", "-5%"):
        with pytest.raises(ValueError, match=r"80% or 0\.8"):
            parse_fraction(bad)


def test_the_socket_group_is_named_from_the_socket_or_its_directory(tmp_path: Path) -> None:
    import grp

    from awgd_client.sync_client import socket_group

    group = grp.getgrgid(os.stat(tmp_path).st_gid).gr_name
    assert socket_group(str(tmp_path / "awgd.sock")) == group  # unreadable socket: the directory's
    unnamed = next(gid for gid in range(64000, 65000) if gid not in {g.gr_gid for g in grp.getgrall()})
    os.chown(tmp_path, -1, unnamed)  # as root; a group without a name is told by its number
    assert socket_group(str(tmp_path / "awgd.sock")) == str(unnamed)


@pytest.mark.skipif(not (ROOT / "client" / "pyproject.toml").exists(), reason="needs the source tree's client/")
def test_client_installs_and_works_without_the_daemon_dependencies(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    venv = tmp_path / "botvenv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    build = tmp_path / "client-src"
    shutil.copytree(ROOT / "client", build, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    # Exactly what the README tells a bot developer to run.
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(build)], check=True, timeout=300)
    script = f"""
import importlib.metadata, importlib.util, sys
assert importlib.util.find_spec("sqlalchemy") is None, "the bot's venv must not have SQLAlchemy"
assert importlib.util.find_spec("awgd") is None, "nor the daemon"
assert importlib.util.find_spec("awgd_fleet") is None, "nor the fleet"
installed = {{d.metadata["Name"].lower() for d in importlib.metadata.distributions()}}
assert installed - {{"pip", "setuptools", "wheel"}} == {{"awgd-client"}}, installed
from importlib.resources import files
assert (files("awgd_client") / "locale/ru/LC_MESSAGES/awgd_client.mo").is_file(), "the Russian texts ship"
from awgd_client import Client, format_bytes
with Client({daemon.socket!r}) as awgd:
    peer = awgd.traffic({A!r})
    print(peer.interface, format_bytes(peer.period.tx_bytes))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=True
    )
    assert out.stdout.strip() == "wg0 2.0 KiB"
    awgctl = subprocess.run(
        [str(venv / "bin" / "awgctl"), "--socket", daemon.socket, "status"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert awgctl.returncode == 0 and "healthy" in awgctl.stdout


@pytest.mark.skipif(not (ROOT / "fleet" / "pyproject.toml").exists(), reason="needs the source tree's fleet/")
def test_the_fleet_installs_as_its_own_distribution(tmp_path: Path) -> None:
    venv = tmp_path / "fleetvenv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    sources = []
    for part in ("client", "fleet"):
        sources.append(tmp_path / f"{part}-src")
        shutil.copytree(ROOT / part, sources[-1], ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    subprocess.run([str(python), "-m", "pip", "install", "-q", *map(str, sources)], check=True, timeout=600)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    printed = subprocess.run(
        [str(venv / "bin" / "awgd-mirror"), "--print-schema"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=True,
    ).stdout
    from awgd_fleet.schema import schema_sql

    assert printed == schema_sql()
    check = "import importlib.util; assert importlib.util.find_spec('awgd') is None; from awgd_fleet import FleetClient"
    subprocess.run([str(python), "-c", check], env=env, cwd=tmp_path, check=True, timeout=60)
