"""awgd_client: talk to awgd over its Unix socket (standard library only)."""

__version__ = "0.1.0"
