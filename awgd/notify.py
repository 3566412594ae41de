"""systemd notifications (sd_notify): READY, STATUS, WATCHDOG, RELOADING, STOPPING.

A no-op when NOTIFY_SOCKET is unset (started by hand, or by tests that do not listen).
"""

from __future__ import annotations

import os

import sdnotify


class Notifier:
    def __init__(self) -> None:
        self._notifier = sdnotify.SystemdNotifier() if os.environ.get("NOTIFY_SOCKET") else None

    def send(self, *assignments: str) -> None:
        if self._notifier is not None:
            self._notifier.notify("\n".join(assignments))

    def watchdog_interval(self) -> float | None:
        """Half of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises; None when not asked for."""
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        if self._notifier is None or not usec.isdigit() or int(usec) == 0:
            return None
        if pid and pid != str(os.getpid()):
            return None
        return int(usec) / 2 / 1_000_000
