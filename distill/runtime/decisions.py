"""The robot's decision log: one JSON line per routed request, size-rotated, never in the way of routing.

Each line: {"time", "text", "skill", "args", "confidence", "source", "reason", "latency_ms", "model"}.
`make harvest` fetches these files (decisions.jsonl plus rotated decisions.jsonl.1 ... .N) and turns the
fallbacks and low-confidence requests into the next round of training prompts.

Logging is best effort by design: a full disk or a read-only directory prints one warning and routing goes
on. The standard library's RotatingFileHandler does the size-based rotation; its error hook is where we
swallow the failure.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
from pathlib import Path
from typing import Any

from ..fileio import utc_now

DEFAULT_PATH = Path("data/decisions/decisions.jsonl")
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_BACKUPS = 3
# One setting turns it off or moves it: DISTILL_DECISION_LOG=off | /var/lib/droidhead/decisions.jsonl
ENV = "DISTILL_DECISION_LOG"
OFF_VALUES = {"", "off", "0", "false", "no", "none"}

_warn = logging.getLogger(__name__)


class _QuietRotatingHandler(logging.handlers.RotatingFileHandler):
    """Rotating JSONL writer whose I/O errors become a single warning instead of a traceback per record."""

    def __init__(self, path: Path, max_bytes: int, backups: int):
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True)
        self.failures = 0

    def _open(self):
        # Every (re)open: a write cut short by a full disk leaves a torn last line, and the next record would be
        # glued onto it and lost to harvest. Repair first; the stream is reopened after each failure.
        _end_with_whole_line(Path(self.baseFilename))
        return super()._open()

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        self.failures += 1
        if self.failures == 1:
            import sys

            err = sys.exc_info()[1]
            _warn.warning("decision log %s is not writable (%s); routing goes on without it", self.baseFilename, err)
        # Drop a half-open stream so the next record retries cleanly (the disk may have space again).
        if self.stream is not None:
            try:
                self.stream.close()
            except OSError:
                pass
            self.stream = None


class DecisionLog:
    """Append decisions to `path` (JSONL), rotating at `max_bytes` and keeping `backups` old files."""

    def __init__(self, path: str | Path = DEFAULT_PATH, max_bytes: int = DEFAULT_MAX_BYTES,
                 backups: int = DEFAULT_BACKUPS):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # the handler's first write reports it, once
        self._handler = _QuietRotatingHandler(self.path, max_bytes, backups)
        self._handler.setFormatter(logging.Formatter("%(message)s"))

    @classmethod
    def from_env(cls, default: str | Path | None = DEFAULT_PATH) -> DecisionLog | None:
        """The log named by $DISTILL_DECISION_LOG (a path, or `off`); `default` when unset."""
        value = os.environ.get(ENV)
        if value is None:
            return cls(default) if default is not None else None
        if value.strip().lower() in OFF_VALUES:
            return None
        return cls(value)

    @property
    def failures(self) -> int:
        return self._handler.failures

    def append(self, record: dict[str, Any]) -> None:
        """Never raises: an unserialisable value is written with str(), an I/O error warns once."""
        try:
            line = json.dumps({"time": utc_now("milliseconds"), **record}, ensure_ascii=False, default=str)
            self._handler.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
        except Exception as err:  # noqa: BLE001 -- the log must never break routing
            self._handler.failures += 1
            if self._handler.failures == 1:
                _warn.warning("decision log %s failed (%s); routing goes on without it", self.path, err)

    def close(self) -> None:
        try:
            self._handler.close()
        except OSError:
            pass


def _end_with_whole_line(path: Path) -> None:
    """Cut a torn last line (a record the disk had no room for); end a whole record that only lacks its
    newline. Best effort, like the log itself: an error here shows up as the next write's warning."""
    try:
        with path.open("r+b") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return
            handle.seek(max(0, size - 65536))
            tail = handle.read()
            if tail.endswith(b"\n"):
                return
            cut = tail.rfind(b"\n")
            if cut < 0 and size > len(tail):
                return  # a last line longer than 64 KiB is not one of ours: leave it
            last = tail[cut + 1:]
            try:
                whole = isinstance(json.loads(last), dict)
            except ValueError:
                whole = False
            if whole:
                handle.write(b"\n")
            else:
                handle.truncate(size - len(last))
    except OSError:
        pass


def log_files(path: str | Path) -> list[Path]:
    """The current log and its rotated backups, oldest first (what harvest reads)."""
    path = Path(path)
    backups = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -_suffix_number(p))
    return [p for p in backups if _suffix_number(p) > 0] + ([path] if path.exists() else [])


def _suffix_number(path: Path) -> int:
    tail = path.name.rpartition(".")[2]
    return int(tail) if tail.isdigit() else 0



