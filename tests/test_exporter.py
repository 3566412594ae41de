"""awgd-exporter and `awgctl metrics` (docs/METRICS.md): a real awgd on real amneziawg-go,
the exporter as its own process, Debian's promtool checking the exposition and a real
Prometheus server scraping it, its query API answering with the ledger's figures."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_plans
from conftest import ScriptedTool, dump, key
from test_awgctl import awgctl
from test_peers import Server
from wgbed import TestBed

pytest.importorskip("prometheus_client", reason="the exporter extra (prometheus_client) is not installed")

from awgd_client import Client
from awgd_client.metrics import PAGE_PEERS, peer_exposition, read_peers

pytestmark = [pytest.mark.wireguard]

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
needs_prometheus = pytest.mark.skipif(
    not os.path.exists(PROMETHEUS), reason="needs Debian's prometheus (tests/run.sh installs it)"
)

bed = test_plans.bed  # two clients on real amneziawg-go 3.1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str, token: str | None = None) -> str:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as answer:
        return str(answer.read().decode())


class Exporter:
    """The exporter as its own process, with a token (as the packaged unit has) unless told
    `token=False`."""

    def __init__(self, socket_path: str, tmp_path: Path, *extra: str, token: bool = True) -> None:
        self.port = free_port()
        self.log = tmp_path / f"exporter-{self.port}.log"
        self.token: str | None = None
        if token:
            self.token = "t0k-" + os.urandom(12).hex()
            self.token_file = tmp_path / f"token-{self.port}"
            self.token_file.write_text(self.token + "\n")
            extra = (*extra, "--token-file", str(self.token_file))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "client")])}
        command = [sys.executable, "-m", "awgd_client.exporter", "--listen", f"127.0.0.1:{self.port}"]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([*command, "--socket", socket_path, *extra], env=env, stderr=log)
        deadline = time.monotonic() + 20
        while b"serving" not in self.log.read_bytes():
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the exporter did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}/metrics"

    def scrape(self) -> str:
        return get(self.url, self.token)

    def stop(self) -> None:
        self.process.terminate()
        assert self.process.wait(10) == 0


@pytest.fixture
def exporter_for(tmp_path: Path) -> Iterator[Any]:
    made: list[Exporter] = []

    def make(socket_path: str, *extra: str, token: bool = True) -> Exporter:
        made.append(Exporter(socket_path, tmp_path, *extra, token=token))
        return made[-1]

    yield make
    for exporter in made:
        if exporter.process.poll() is None:
            exporter.process.kill()
            exporter.process.wait()


LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text: str) -> dict[str, float]:
    """Every sample line of an exposition: `name{labels}` (labels sorted, as `series` writes
    them) → value."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            name, _, labels = head.partition("{")
            found[series(name, **dict(LABEL.findall(labels)))] = float(value)
    return found


def series(name: str, **labels: str) -> str:
    """A series' name with its labels (values escaped as in the exposition) in name order."""
    return name + ("{" + ",".join(f'{k}="{labels[k]}"' for k in sorted(labels)) + "}" if labels else "")


# The repository's, or, where the suite runs against the installed package, the .deb's.
DASHBOARD = next(
    (
        path
        for path in (
            ROOT / "grafana" / "awgd-dashboard.json",
            Path("/usr/share/awgd-exporter/grafana/awgd-dashboard.json"),
        )
        if path.exists()
    ),
    ROOT / "grafana" / "awgd-dashboard.json",
)
GRAFANA_VARIABLES = {"$interface": ".*", "$__rate_interval": "1m", "$__range": "5m"}


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the Grafana dashboard, its variables filled in."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    queries = []
    for panel in panels:
        for target in panel["targets"]:
            expression = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expression = expression.replace(variable, value)
            queries.append(expression)
    return queries


def promtool_check(text: str) -> str:
    checked = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return checked.stdout + checked.stderr


@needs_prometheus
def test_prometheus_scrapes_the_ledgers_figures(daemons, bed: TestBed, exporter_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(1, 2))
    user, other = bed.peers[0], bed.peers[1]
    key, other_key = user.tunnel.public_key, other.tunnel.public_key
    bed.ping(user, 3)
    bed.ping(other, 2)
    server.daemon.result("traffic.sample")
    server.result("peer.update", public_key=key, label='Alice "phone"')
    server.result("peer.block", public_key=other_key)
    server.result("plan.set", public_key=key, limit_bytes=10**9)
    server.result("peer.limit", public_key=key, down_kbit=2000)
    figures = server.result("traffic.get", public_key=key)
    exporter = exporter_for(server.daemon.socket)
    text = exporter.scrape()
    assert promtool_check(text) == ""
    got = samples(text)
    labels = {"interface": server.ifname, "public_key": key, "friendly_name": 'Alice \\"phone\\"'}
    assert got["awgd_up"] == 1 and got["awgd_healthy"] == 1, text
    assert got[series("wireguard_received_bytes_total", **labels)] == figures["lifetime"]["rx_bytes"], text
    assert got[series("wireguard_sent_bytes_total", **labels)] == figures["lifetime"]["tx_bytes"]
    assert got[series("awgd_peer_period_bytes", **labels, direction="tx")] == figures["period"]["tx_bytes"]
    assert got[series("awgd_peer_plan_limit_bytes", **labels)] == 10**9
    assert got[series("awgd_peer_online", **labels)] == 1
    limit = series("awgd_peer_rate_limit_bytes_per_second", **labels, direction="down")
    assert got[limit] == 250_000  # 2,000 kbit/s in bytes
    assert not any(s.startswith("awgd_peer_rate_limit") and 'direction="up"' in s for s in got)
    other_labels = {"interface": server.ifname, "public_key": other_key, "friendly_name": ""}
    assert got[series("awgd_peer_blocked", **other_labels, reason="admin")] == 1
    assert not any(s.startswith("awgd_peer_blocked") and key in s for s in got)
    assert got[series("awgd_interface_up", interface=server.ifname)] == 1
    assert got["awgd_last_sample_duration_seconds"] > 0
    # A real Prometheus scraping it answers with the same figures through its query API.
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "awgd",
                        "authorization": {"credentials_file": str(exporter.token_file)},
                        "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}],
                    }
                ],
            }
        )
    )
    prometheus = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def query(expression: str) -> list[dict[str, Any]]:
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
            deadline = time.monotonic() + 60
            while True:
                try:
                    result = json.loads(get(url))["data"]["result"]
                    if result:
                        return result  # type: ignore[no-any-return]
                except OSError:
                    pass  # not listening yet
                assert time.monotonic() < deadline, f"Prometheus has no {expression}"
                time.sleep(0.25)

        (rx,) = query(f'wireguard_received_bytes_total{{public_key="{key}"}}')
        assert float(rx["value"][1]) == figures["lifetime"]["rx_bytes"]
        assert rx["metric"]["friendly_name"] == 'Alice "phone"'
        (blocked,) = query(f'awgd_peer_blocked{{public_key="{other_key}"}}')
        assert blocked["metric"]["reason"] == "admin"
        (used,) = query(f'awgd_peer_plan_used_bytes{{public_key="{key}"}}')
        assert float(used["value"][1]) == figures["plan"]["used_bytes"]
        # Every query of the Grafana dashboard is valid PromQL, and finds series here.
        for expression in dashboard_queries():
            assert query(expression), expression
    finally:
        prometheus.terminate()
        prometheus.wait(30)


def test_awgd_down_gives_awgd_up_0_and_nothing_else(daemons, bed: TestBed, exporter_for) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(1, 2))
    server.daemon.result("traffic.sample")
    exporter = exporter_for(server.daemon.socket)
    assert samples(exporter.scrape())["awgd_up"] == 1
    server.daemon.stop()
    deadline = time.monotonic() + 10  # a scrape within a second of the last shares its answer
    while samples(down := exporter.scrape()).get("awgd_up") != 0:
        assert time.monotonic() < deadline, down
    assert samples(down) == {"awgd_up": 0.0}
    promtool_check(down)
    assert awgctl("metrics", "--socket", server.daemon.socket).stdout.strip().splitlines()[-1] == "awgd_up 0.0"
    server.daemon.start()  # the exporter lives on and reads the restarted daemon
    deadline = time.monotonic() + 10
    while (back := samples(exporter.scrape())).get("awgd_up") != 1:
        assert time.monotonic() < deadline, back
    assert back["awgd_up"] == 1 and any(s.startswith("wireguard_received_bytes_total{") for s in back)


def test_awgctl_metrics_prints_what_the_exporter_serves(daemons, bed: TestBed, exporter_for) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(1, 2))
    bed.ping(bed.peers[0], 2)
    server.daemon.result("traffic.sample")
    exporter = exporter_for(server.daemon.socket)
    served = samples(exporter.scrape())
    printed = awgctl("metrics", "--socket", server.daemon.socket)
    assert printed.returncode == 0
    assert samples(printed.stdout).keys() == served.keys()
    lean = exporter_for(server.daemon.socket, "--no-peer-metrics")
    kept = samples(lean.scrape())
    assert kept["awgd_up"] == 1 and not any("public_key=" in s for s in kept)
    assert any(s.startswith("awgd_interface_peers{") for s in kept)


def test_a_server_with_more_peers_than_a_page_is_read_in_pages(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    many = [f"{i:042d}A=" for i in range(PAGE_PEERS + 37)]
    interface = dump({"awg0": {}})  # with no endpoints, so that ports need not be unique
    lines = [
        f"awg0\t{k}\t(none)\t(none)\t10.{i // 65536}.{i // 256 % 256}.{i % 256}/32\t0\t0\t0\toff"
        for i, k in enumerate(many)
    ]
    scripted_tool.set(interface + "".join(line + "\n" for line in lines))
    daemon = daemons(scripted_tool.path).start()
    with Client(daemon.socket) as client:
        peers = read_peers(client)
    assert len(peers) == PAGE_PEERS + 37 and {p.public_key for p in peers} == set(many)


def test_the_dashboard_queries_only_what_the_exporter_exports(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"awg0": {key("A"): (1, 2)}}))
    daemon = daemons(scripted_tool.path).start()
    printed = awgctl("metrics", "--socket", daemon.socket)
    exported = set(re.findall(r"^# TYPE (\S+)", printed.stdout, re.MULTILINE))
    exported |= {f"{name}_total" for name in exported}  # a counter's family and its samples
    queried = {name for q in dashboard_queries() for name in re.findall(r"\b((?:wireguard|awgd)_\w+)", q)}
    assert queried and queried <= exported, queried - exported
    titles = " / ".join(p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]).lower()
    for subject in (
        "traffic per peer",
        "top talkers",
        "online",
        "interfaces up",
        "healthy",
        "sample duration",
        "blocked",
        "stalled",
    ):
        assert subject in titles, subject


@needs_prometheus
def test_a_stalled_peer_is_a_series_of_its_own_and_counted_per_interface(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    """awgd_peer_stalled is there for a stalled peer only (how a peer becomes stalled:
    tests/test_stalls.py), and every interface has its count."""
    scripted_tool.set(dump({"awg0": {key("A"): (1, 2), key("B"): (3, 4)}}))
    daemon = daemons(scripted_tool.path).start()
    with Client(daemon.socket) as client:
        peers = read_peers(client)
        status = client.server_status()
    stalled = [dataclasses.replace(p, stalled=p.public_key == key("A")) for p in peers]
    text = peer_exposition(stalled)
    assert promtool_check(text) == ""
    lines = [line for line in text.splitlines() if line.startswith("awgd_peer_stalled{")]
    assert len(lines) == 1 and key("A") in lines[0] and lines[0].endswith(" 1")
    printed = awgctl("metrics", "--socket", daemon.socket).stdout
    assert 'awgd_interface_peers_stalled{interface="awg0"} 0.0' in printed
    assert status.interfaces[0].peers_stalled == 0


# ---- what it serves to whom, and how it holds up (issue 26, D12) -------------------------------


def raw_request(port: int, data: bytes, *, half_close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_only_a_token_holder_reads_peers_and_idle_clients_cost_nothing(
    daemons, scripted_tool: ScriptedTool, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {key("A"): (100, 200)}}))
    daemon = daemons(scripted_tool.path).start()
    daemon.result("traffic.sample")
    exporter = Exporter(daemon.socket, tmp_path)
    try:
        # No token, a wrong one: 401, nothing of awgd's.
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {exporter.token}"}):
            request = urllib.request.Request(exporter.url, headers=headers)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == 401 and b"awgd" not in refused.value.read()
        assert key("A") in exporter.scrape()
        # A request that never finishes is answered 400 and closed, within the timeout.
        started = time.monotonic()
        unfinished = raw_request(exporter.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n", half_close=False)
        assert unfinished.startswith(b"HTTP/1.1 400 ") and time.monotonic() - started < 15
        # 300 idle connections: past the cap each is answered 503 at once, the others 400 at the
        # request timeout; the loop does not spin meanwhile, and scrapes go through after.
        before = cpu_seconds(exporter.process.pid)
        idle = [socket.create_connection(("127.0.0.1", exporter.port), timeout=30) for _ in range(300)]
        try:
            busy = [sock for sock in idle if sock.recv(64).startswith(b"HTTP/1.1 503")]
            assert len(busy) == 300 - 64
            assert key("A") in exporter.scrape()
        finally:
            for sock in idle:
                sock.close()
        assert cpu_seconds(exporter.process.pid) - before < 2.0
    finally:
        exporter.process.kill()
        exporter.process.wait()
    # Without a token nothing per peer is served at all.
    open_exporter = Exporter(daemon.socket, tmp_path, token=False)
    try:
        served = open_exporter.scrape()
        assert samples(served)["awgd_up"] == 1 and key("A") not in served and "awgd_peer" not in served
        assert "per-peer series are left out" in open_exporter.log.read_text()
    finally:
        open_exporter.process.kill()
        open_exporter.process.wait()


def test_requests_within_a_second_share_one_scrape() -> None:
    import asyncio

    from awgd_client.exporter import SharedScrape

    calls = []

    def scrape() -> bytes:
        calls.append(time.monotonic())
        time.sleep(0.2)
        return str(len(calls)).encode()

    async def flood() -> list[bytes]:
        shared = SharedScrape(scrape)
        return list(await asyncio.gather(*(shared.get() for _ in range(100))))

    assert asyncio.run(flood()) == [b"1"] * 100 and len(calls) == 1
