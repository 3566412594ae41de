"""Logging to stderr for journald: one line per event, with the level as a prefix.

Under systemd (JOURNAL_STREAM set) the prefix is sd-daemon's `<N>`, which journald turns
into the entry's priority; by hand it is the level's name.
"""

from __future__ import annotations

import logging
import os
import sys

_SD_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class _OneLine(logging.Formatter):
    def __init__(self, journald: bool) -> None:
        super().__init__()
        self._journald = journald

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            # The exception type and message only: tracebacks go to debug, never to clients.
            exc = record.exc_info[1]
            message = f"{message}: {exc.__class__.__name__}: {exc}"
        message = message.replace("\n", " | ")
        if self._journald:
            return f"<{_SD_PRIORITY.get(record.levelno, 6)}>{message}"
        return f"{record.levelname.lower()}: {message}"


def setup(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine(journald=bool(os.environ.get("JOURNAL_STREAM"))))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
