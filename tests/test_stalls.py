"""Stalled peers, "connected, but no traffic" (API v3, section 4): the rules of awgd.stalls
over every sequence of readings, a real awgd over a scripted tool (restarts and all), and
real amneziawg-go, where a device whose H4 differs from the server's stalls for real."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import wgbed
from conftest import ScriptedTool, dump, key
from hypothesis import given, settings
from hypothesis import strategies as st
from test_awgctl import awgctl
from wgbed import AMNEZIAWG, AMNEZIAWG_2024, Client, TestBed

from awgd.stalls import INITIATION_BYTES, QUIET_SECONDS, Stall, initiations_only, observe

STALL = 300
RESPONSE = 92 + 100  # the server's answer to one initiation, with S2 = 100


def run(readings: list[tuple[int, int, int, int]], stall_seconds: int = STALL) -> list[tuple[int, str]]:
    """Feed readings (seconds since the last, drx, dtx, handshake) through observe; the events
    it makes, with the reading's time."""
    stall: Stall | None = None
    at, made = 1_000_000, []
    for gap, drx, dtx, handshake in readings:
        before, at = at, at + gap
        stall, kind = observe(
            stall, drx=drx, dtx=dtx, handshake=handshake, at=at, before=before, stall_seconds=stall_seconds
        )
        if kind is not None:
            made.append((at, kind))
    return made


# ---- the rules ------------------------------------------------------------------------------

reading = st.tuples(
    st.integers(1, 200),
    st.one_of(st.integers(0, 5).map(lambda n: n * INITIATION_BYTES), st.integers(0, 10_000)),
    st.sampled_from([0, RESPONSE, 2 * RESPONSE, 1500]),
    st.sampled_from([0, 0, 0, 1_000_100, 1_000_200, 1_000_300]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(reading, max_size=40), st.integers(10, 400))
def test_events_alternate_and_recovery_is_a_new_handshake(readings: list[Any], stall_seconds: int) -> None:
    """Whatever the readings: peer.stalled and peer.recovered alternate, starting with
    peer.stalled (one announcement per episode), and an episode ends only on a handshake
    that was not there when it began."""
    made = run(readings, stall_seconds)
    kinds = [kind for _, kind in made]
    assert kinds == ["peer.stalled", "peer.recovered"] * (len(kinds) // 2) + ["peer.stalled"] * (len(kinds) % 2)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 200), st.integers(0, 10_000), st.integers(0, 3000)), max_size=40))
def test_traffic_that_is_not_only_initiations_is_never_a_stall(readings: list[tuple[int, int, int]]) -> None:
    shaped = [(gap, drx if drx % INITIATION_BYTES else drx + 1, dtx, 0) for gap, drx, dtx in readings]
    assert run(shaped, 10) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 600), max_size=40))
def test_a_device_that_is_off_is_never_stalled(gaps: list[int]) -> None:
    assert run([(gap, 0, 0, 0) for gap in gaps], 10) == []
    assert run([(gap, 0, RESPONSE, 0) for gap in gaps], 10) == []  # the server alone trying


@settings(max_examples=200, deadline=None)
@given(st.integers(5, QUIET_SECONDS), st.integers(1, 5), st.integers(30, 600), st.integers(0, 1_000_000))
def test_a_device_that_keeps_trying_is_stalled_once_after_stall_seconds(
    every: int, per: int, stall_seconds: int, handshake: int
) -> None:
    """Answered initiations every `every` seconds (`per` at a time), the handshake as it was:
    announced once, at the first reading at least stall_seconds after the one before the
    first initiation, never before; it stays announced while the device keeps trying."""
    readings = [(every, per * INITIATION_BYTES, per * RESPONSE, handshake)] * (2 * stall_seconds // every + 3)
    made = run(readings, stall_seconds)
    assert len(made) == 1
    at, kind = made[0]
    assert kind == "peer.stalled"
    started = 1_000_000  # the reading before the first initiation
    assert stall_seconds <= at - started < stall_seconds + every


def test_a_pause_longer_than_quiet_starts_the_suspicion_again() -> None:
    tries = [(60, INITIATION_BYTES, RESPONSE, 0)] * 3  # 180 s of trying, then quiet
    assert run([*tries, (QUIET_SECONDS + 60, 0, 0, 0), *tries], stall_seconds=200) == []
    assert run([*tries, (30, 0, 0, 0), *tries], stall_seconds=200)  # a short pause does not


def test_a_new_handshake_or_other_traffic_ends_a_suspicion_and_only_a_handshake_a_stall() -> None:
    trying = (30, INITIATION_BYTES, RESPONSE, 5)
    assert run([trying] * 5 + [(30, 160, 300, 5)] + [trying] * 5, stall_seconds=200) == []
    made = run([trying] * 10 + [(30, 160, 300, 5)] + [trying] * 3 + [(30, 148 + 160, 300, 999)], stall_seconds=200)
    assert [kind for _, kind in made] == ["peer.stalled", "peer.recovered"]
    assert initiations_only(INITIATION_BYTES * 3, 1)
    assert not initiations_only(INITIATION_BYTES * 3, 0)  # never answered: not what a stall is
    assert not initiations_only(INITIATION_BYTES + 32, RESPONSE)


# ---- a real awgd over a scripted tool --------------------------------------------------------

A, B = key("A"), key("B")


def dump_of(counters: dict[str, tuple[int, int, int]]) -> str:
    """`show all dump` of wg0 with each peer's (rx, tx, latest handshake)."""
    lines = dump({"wg0": {k: (rx, tx) for k, (rx, tx, _) in counters.items()}}).splitlines()
    for index, line in enumerate(lines[1:], start=1):
        fields = line.split("\t")
        fields[5] = str(counters[fields[1]][2])
        lines[index] = "\t".join(fields)
    return "".join(line + "\n" for line in lines)


@pytest.mark.slow
def test_stalled_in_the_rpc_once_across_a_restart_then_recovered(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    stall_seconds = 10
    now = int(time.time())
    counters = {A: (0, 0, 0), B: (0, 0, now)}

    def step(a_initiations: int, b_bytes: int, a_handshake: int | None = None) -> None:
        rx, tx, handshake = counters[A]
        counters[A] = (rx + a_initiations * INITIATION_BYTES, tx + a_initiations * RESPONSE, a_handshake or handshake)
        rx, tx, _ = counters[B]
        counters[B] = (rx + b_bytes, tx + b_bytes, int(time.time()))  # a session: its handshake advances
        scripted_tool.set(dump_of(counters))

    step(0, 0)
    daemon = daemons(scripted_tool.path, wireguard={"stall_seconds": stall_seconds}).start()
    daemon.result("traffic.sample")  # the baseline
    started = time.monotonic()
    while time.monotonic() - started < stall_seconds + 2:
        step(1, 1600)
        daemon.result("traffic.sample")
        if daemon.result("traffic.get", public_key=A)["stalled"]:
            break
        time.sleep(1)  # a device's pace: the flag needs stall_seconds of it, not a sample count
    assert daemon.result("traffic.get", public_key=A)["stalled"]
    assert time.monotonic() - started >= stall_seconds - 1
    assert not daemon.result("traffic.get", public_key=B)["stalled"]
    assert daemon.result("server.status")["interfaces"][0]["peers_stalled"] == 1
    stalled = daemon.result("events.list", types=["peer.stalled", "peer.recovered"])["events"]
    assert [(e["type"], e["public_key"]) for e in stalled] == [("peer.stalled", A)]
    # awgctl: its own STATE in the table, a line saying what to do, the count in status.
    rows = awgctl("peers", "--wide", "--socket", daemon.socket).stdout.splitlines()
    states = {row[:4]: row.split()[3] for row in rows if row.startswith(("AAAA", "BBBB"))}
    assert states == {"AAAA": "stalled", "BBBB": "online"}, rows
    assert "give the user the config again" in awgctl("peer", A, "--socket", daemon.socket).stdout
    status = awgctl("status", "--socket", daemon.socket).stdout.splitlines()
    header = next(line for line in status if line.startswith("INTERFACE")).split()
    wg0 = next(line for line in status if line.startswith("wg0")).split()
    assert wg0[header.index("STALLED")] == "1"

    assert daemon.stop() == 0
    daemon.start()  # the same episode goes on: no second announcement
    for _ in range(3):
        step(1, 1600)
        daemon.result("traffic.sample")
    assert daemon.result("traffic.get", public_key=A)["stalled"]
    assert len(daemon.result("events.list", types=["peer.stalled"])["events"]) == 1

    step(0, 1600, a_handshake=int(time.time()))  # the device has the right parameters: a session
    daemon.result("traffic.sample")
    assert not daemon.result("traffic.get", public_key=A)["stalled"]
    assert daemon.result("server.status")["interfaces"][0]["peers_stalled"] == 0
    found = daemon.result("events.list", types=["peer.stalled", "peer.recovered"])["events"]
    assert [e["type"] for e in found] == ["peer.stalled", "peer.recovered"]
    assert found[1]["data"]["stalled_since"] == found[0]["data"]["since"]


# ---- real amneziawg-go ------------------------------------------------------------------------


@pytest.fixture(params=[AMNEZIAWG, AMNEZIAWG_2024], ids=[AMNEZIAWG.id, AMNEZIAWG_2024.id])
def bed(request: pytest.FixtureRequest) -> Iterator[TestBed]:
    """amneziawg-go and awg as they are now (3.1), and the pair Amnezia's image had in 2024."""
    problem = wgbed.available(request.param)
    if problem is not None:
        pytest.skip(problem)
    with TestBed(clients=2, flavor=request.param) as made:
        yield made


def start_with_h4(bed: TestBed, client: Client, h4: str) -> None:
    """Restart the client's device with its H4 set to `h4` (the server keeps its own)."""
    client.tunnel.kill()
    original = bed.flavor
    bed.flavor = dataclasses.replace(original, obfuscation={**original.obfuscation, "H4": h4})
    try:
        bed.start_client(client)
    finally:
        bed.flavor = original


def keep_pinging(bed: TestBed, client: Client) -> subprocess.Popen[bytes]:
    """The user's app in use: a packet a second to the server through the tunnel."""
    server = bed.server_of(client)
    return subprocess.Popen(
        client.host.argv("ping", "-i", "1", "-W", "1", server.address),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.wireguard
@pytest.mark.slow
def test_a_device_with_a_wrong_h4_stalls_on_real_amneziawg_and_recovers(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    stall_seconds, every = 20, 5
    wrong, healthy = bed.peers
    daemon = daemons(
        "auto",
        prefix=bed.server.argv(),
        env=bed.path_env(),
        wireguard={"stall_seconds": stall_seconds},
        sampling=f"* * * * * */{every}",
    ).start()
    daemon.result("traffic.sample")
    start_with_h4(bed, wrong, "1234567899")
    started = time.monotonic()
    pings = [keep_pinging(bed, wrong), keep_pinging(bed, healthy)]
    try:
        deadline = started + stall_seconds + every + 20  # + the device's first try, and slack for a busy host
        while not daemon.result("traffic.get", public_key=wrong.tunnel.public_key)["stalled"]:
            assert time.monotonic() < deadline, daemon.result("traffic.get", public_key=wrong.tunnel.public_key)
            time.sleep(0.5)
        flagged_after = time.monotonic() - started
        assert stall_seconds - every <= flagged_after <= stall_seconds + every + 15, flagged_after
        peer = daemon.result("traffic.get", public_key=wrong.tunnel.public_key)
        assert peer["latest_handshake"] is None  # never a session on the server's side
        rx, tx = wrong_rx_tx = bed.server_of(wrong).counters(wrong.tunnel.public_key)
        assert rx > 0 and rx % wgbed.HANDSHAKE_INITIATION == 0, wrong_rx_tx  # initiations only
        assert tx > 0
        assert not daemon.result("traffic.get", public_key=healthy.tunnel.public_key)["stalled"]
        status = daemon.result("server.status")
        assert status["interfaces"][0]["peers_stalled"] == 1
        kinds = lambda: [  # noqa: E731
            (e["type"], e["public_key"])
            for e in daemon.result("events.list", types=["peer.stalled", "peer.recovered"])["events"]
        ]
        assert kinds() == [("peer.stalled", wrong.tunnel.public_key)]

        bed.restart_client(wrong)  # the user imported the config again: the server's H4
        deadline = time.monotonic() + 60
        while daemon.result("traffic.get", public_key=wrong.tunnel.public_key)["stalled"]:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert kinds() == [("peer.stalled", wrong.tunnel.public_key), ("peer.recovered", wrong.tunnel.public_key)]
        assert daemon.result("server.status")["interfaces"][0]["peers_stalled"] == 0
    finally:
        for ping in pings:
            ping.kill()
            ping.wait()


# ---- the bot tells the device's owner ---------------------------------------------------------


@pytest.mark.slow
def test_the_owner_is_told_to_import_the_config_again_and_when_it_works(
    daemons, scripted_tool: ScriptedTool, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("aiogram", reason="the bot extra (aiogram 3) is not installed")
    import asyncio

    from test_aiogram_notifications import ALICE, running_bot, told
    from test_aiogram_router import command, telegram

    counters = {A: (0, 0, 0), B: (0, 0, int(time.time()))}
    scripted_tool.set(dump_of(counters))
    daemon = daemons(scripted_tool.path, wireguard={"stall_seconds": 10}).start()
    daemon.result("traffic.sample")

    def initiation(handshake: int = 0) -> None:
        rx, tx, _ = counters[A]
        grow = 0 if handshake else 1
        counters[A] = (rx + grow * INITIATION_BYTES, tx + grow * RESPONSE, handshake)
        scripted_tool.set(dump_of(counters))
        daemon.result("traffic.sample")

    async def scenario() -> None:
        async with telegram() as (fake, api), running_bot(api, daemon.socket, {A: ALICE}, tmp_path / "id"):
            started = time.monotonic()
            while not (await asyncio.to_thread(daemon.result, "traffic.get", public_key=A))["stalled"]:
                assert time.monotonic() - started < 30
                await asyncio.to_thread(initiation)
                await asyncio.sleep(1)  # the device's pace
            (stalled,) = await told(fake, ALICE, 1)
            assert stalled.startswith("⚠️ <b>Phone</b>") and "import your config again" in stalled, stalled
            await fake.push(command(ALICE, "/stats"))
            stats = (await told(fake, ALICE, 2))[1]
            assert "Connects, but no traffic passes" in stats and "Online" not in stats, stats
            await asyncio.to_thread(initiation, int(time.time()))
            recovered = (await told(fake, ALICE, 3))[2]
            assert recovered.startswith("✅ <b>Phone</b>") and "works again" in recovered, recovered

    asyncio.run(scenario())
