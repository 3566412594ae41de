"""awgd's figures as Prometheus metrics, under the names the WireGuard exporters' Grafana
dashboards already query (docs/METRICS.md). Read from awgd on each collection: nothing is
cached, so a scrape never shows a stale figure; when awgd does not answer, the only series
is `awgd_up 0`.

`render` writes one scrape (the `exporter` extra, or Debian's python3-prometheus-client, for
awgd's own families): `awgd-exporter` serves it over HTTP, `awgctl metrics` prints it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from awgd_client.errors import AwgdError
from awgd_client.models import PeerTraffic, ServerStatus
from awgd_client.sync_client import Client

# traffic.list's largest page: a server with more peers is read in pages of this many.
PAGE_PEERS = 10000
UP_HELP = "1 when awgd answered this scrape"


def render(connect: Callable[[], Client], *, peer_metrics: bool = True) -> bytes:
    """One scrape in Prometheus's text format (0.0.4): what awgd-exporter serves and `awgctl
    metrics` prints. awgd is read afresh; when it does not answer, only `awgd_up 0`."""
    try:
        with connect() as client:
            status = client.server_status()
            peers = read_peers(client) if peer_metrics else []
    except (AwgdError, OSError):
        return generate_latest(_Families([_single("awgd_up", UP_HELP, 0)]))
    families = [_single("awgd_up", UP_HELP, 1), *server_metrics(status)]
    text = generate_latest(_Families(families))
    return text + peer_exposition(peers).encode() if peer_metrics else text


class _Families(CollectorRegistry):
    """Families already read, in a registry of their own (no process or platform metrics)."""

    def __init__(self, families: list[Metric]) -> None:
        super().__init__(auto_describe=False)
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def read_peers(client: Client) -> list[PeerTraffic]:
    """Every peer, in pages of PAGE_PEERS in key order (a peer added between pages may be
    missed until the next scrape; none is counted twice)."""
    peers: dict[tuple[str, str], PeerTraffic] = {}
    offset = 0
    while True:
        page = client.traffic_list(sort="public_key", limit=PAGE_PEERS, offset=offset)
        for peer in page.peers:
            peers.setdefault((peer.interface, peer.public_key), peer)
        offset += len(page.peers)
        if not page.peers or offset >= page.total:
            return list(peers.values())


def server_metrics(status: ServerStatus) -> Iterator[Metric]:
    info = GaugeMetricFamily("awgd_info", "awgd's version and the tool it runs", labels=["version", "tool"])
    info.add_metric([status.version, status.tool or ""], 1)
    yield info
    yield _single("awgd_healthy", "1 when awgd calls itself healthy (server.status)", int(status.healthy))
    sampler = status.sampler
    success = sampler.last_success_at
    yield _single(
        "awgd_last_sample_success_timestamp_seconds",
        "Unix time of the last successful sample (0: none yet)",
        success.timestamp() if success is not None else 0,
    )
    yield _single(
        "awgd_sampler_consecutive_failures",
        "samples failed in a row since the last good one",
        sampler.consecutive_failures,
    )
    if sampler.last_duration_seconds is not None:
        yield _single(
            "awgd_last_sample_duration_seconds",
            "how long the last successful sample took: the tool, parsing and booking",
            sampler.last_duration_seconds,
        )
    up = GaugeMetricFamily("awgd_interface_up", "1 when the interface exists and is up", labels=["interface"])
    peers = GaugeMetricFamily("awgd_interface_peers", "peers configured on the interface", labels=["interface"])
    online = GaugeMetricFamily("awgd_interface_peers_online", "peers online on the interface", labels=["interface"])
    stalled = GaugeMetricFamily(
        "awgd_interface_peers_stalled",
        "peers whose devices keep connecting and get no traffic",
        labels=["interface"],
    )
    for iface in status.interfaces:
        up.add_metric([iface.name], int(iface.exists and iface.up))
        peers.add_metric([iface.name], iface.peers)
        online.add_metric([iface.name], iface.peers_online)
        stalled.add_metric([iface.name], iface.peers_stalled)
    yield from (up, peers, online, stalled)


# The per-peer families: (name, type, help). Written by peer_exposition rather than through
# prometheus_client's families: at 10,000 peers its generic writer takes most of a second.
PEER_FAMILIES = (
    ("wireguard_sent_bytes_total", "counter", "bytes sent to the peer, all time (awgd's ledger)"),
    ("wireguard_received_bytes_total", "counter", "bytes received from the peer, all time (awgd's ledger)"),
    ("wireguard_latest_handshake_seconds", "gauge", "Unix time of the peer's last handshake (0: never)"),
    ("awgd_peer_period_bytes", "gauge", "the peer's usage in the current billing period"),
    ("awgd_peer_online", "gauge", "1 when the peer is online"),
    ("awgd_peer_present", "gauge", "1 when the peer is configured now"),
    ("awgd_peer_plan_limit_bytes", "gauge", "the limit of the peer's plan"),
    ("awgd_peer_plan_used_bytes", "gauge", "usage in the plan's current window"),
    ("awgd_peer_blocked", "gauge", "1 per reason the peer is blocked for"),
    ("awgd_peer_rate_limit_bytes_per_second", "gauge", "the peer's speed limit (peer.limit) in bytes a second"),
    # Only for stalled peers, like awgd_peer_blocked: a series per peer at 0 would add a line
    # per peer to every scrape for what is, on a healthy server, nobody.
    ("awgd_peer_stalled", "gauge", "1 while the peer's device keeps connecting and gets no traffic"),
)


def peer_exposition(peers: list[PeerTraffic]) -> str:
    """The per-peer series in the text format, labels `interface`, `public_key` and
    `friendly_name` (the peer's label, empty without one)."""
    lines: dict[str, list[str]] = {name: [] for name, _, _ in PEER_FAMILIES}
    sent, received = lines["wireguard_sent_bytes_total"], lines["wireguard_received_bytes_total"]
    handshake, period = lines["wireguard_latest_handshake_seconds"], lines["awgd_peer_period_bytes"]
    online, present = lines["awgd_peer_online"], lines["awgd_peer_present"]
    limit, used, blocked = (
        lines["awgd_peer_plan_limit_bytes"],
        lines["awgd_peer_plan_used_bytes"],
        lines["awgd_peer_blocked"],
    )
    speed, stalled = lines["awgd_peer_rate_limit_bytes_per_second"], lines["awgd_peer_stalled"]
    for peer in peers:
        name = _escape(peer.label or "")
        labels = f'interface="{_escape(peer.interface)}",public_key="{_escape(peer.public_key)}",friendly_name="{name}"'
        sent.append(f"wireguard_sent_bytes_total{{{labels}}} {peer.lifetime.tx_bytes}")
        received.append(f"wireguard_received_bytes_total{{{labels}}} {peer.lifetime.rx_bytes}")
        when = peer.latest_handshake
        handshake.append(f"wireguard_latest_handshake_seconds{{{labels}}} {int(when.timestamp()) if when else 0}")
        period.append(f'awgd_peer_period_bytes{{{labels},direction="rx"}} {peer.period.rx_bytes}')
        period.append(f'awgd_peer_period_bytes{{{labels},direction="tx"}} {peer.period.tx_bytes}')
        online.append(f"awgd_peer_online{{{labels}}} {int(peer.online)}")
        present.append(f"awgd_peer_present{{{labels}}} {int(peer.present)}")
        if peer.plan is not None:
            used.append(f"awgd_peer_plan_used_bytes{{{labels}}} {peer.plan.used_bytes}")
            if peer.plan.limit_bytes is not None:
                limit.append(f"awgd_peer_plan_limit_bytes{{{labels}}} {peer.plan.limit_bytes}")
        for reason in peer.blocked:
            blocked.append(f'awgd_peer_blocked{{{labels},reason="{_escape(reason)}"}} 1')
        if peer.stalled:
            stalled.append(f"awgd_peer_stalled{{{labels}}} 1")
        if peer.rate_limit is not None:
            # direction as the user sees it: down = to the peer, up = from it
            for direction, kbit in (("down", peer.rate_limit.down_kbit), ("up", peer.rate_limit.up_kbit)):
                if kbit is not None:
                    speed.append(
                        f'awgd_peer_rate_limit_bytes_per_second{{{labels},direction="{direction}"}} {kbit * 125}'
                    )
    parts = []
    for name, kind, help_text in PEER_FAMILIES:
        parts.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
        if lines[name]:
            parts.append("\n".join(lines[name]) + "\n")
    return "".join(parts)


def _escape(value: str) -> str:
    """A label value as the text format writes it."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _single(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation)
    gauge.add_metric([], value)
    return gauge
