"""awgd: the traffic-accounting and status daemon for AmneziaWG and WireGuard servers."""

__version__ = "0.1.0"
