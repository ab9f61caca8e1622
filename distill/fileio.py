"""Files that are never half-written: atomic replace for whole files, fsync'd appends for logs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import fail


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Write to a temp file beside `path`, fsync, then rename over it; on error nothing is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode a plain open() would
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_writer(path) as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def write_jsonl(path: str | Path, records: list[dict]) -> None:
    with atomic_writer(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        fail(path, "file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        fail(path, f"invalid JSON at line {err.lineno}: {err.msg}")


def read_jsonl(path: str | Path, *, allow_empty: bool = False) -> list[dict]:
    """Every line must be a JSON object; the error names file and line."""
    path = Path(path)
    if not path.is_file():
        fail(path, "file not found")
    records = []
    with path.open() as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                fail(f"{path}:{number}", f"invalid JSON: {err.msg}")
            if not isinstance(record, dict):
                fail(f"{path}:{number}", "expected a JSON object")
            records.append(record)
    if not records and not allow_empty:
        fail(path, "no records")
    return records


def read_prompts(path: str | Path) -> list[str]:
    """One prompt a line; blank lines and `#` comments are skipped."""
    path = Path(path)
    if not path.is_file():
        fail(path, "input file not found")
    lines = [line.strip() for line in path.read_text().splitlines()]
    prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        fail(path, "no prompts (one a line, # for comments)")
    return prompts


class JsonlAppender:
    """Append-only JSONL with one fsync per record: a kill -9 loses at most the record being written.

    A torn last line left by an earlier kill is cut off on open, so the file always parses.
    `sync_interval` > 0 batches the fsyncs (group commit, at most one per interval, and on close): each record
    still reaches the kernel at once, so a kill -9 loses nothing; only a power cut can lose the last interval.
    """

    def __init__(self, path: str | Path, sync_interval: float = 0.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_tail(self.path)
        self._handle = self.path.open("a")
        self._sync_interval = sync_interval
        self._last_sync = 0.0
        self._unsynced = False

    def append(self, record: dict) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        self._unsynced = True
        if time.monotonic() - self._last_sync >= self._sync_interval:
            self._sync()

    def _sync(self) -> None:
        os.fsync(self._handle.fileno())
        self._last_sync = time.monotonic()
        self._unsynced = False

    def close(self) -> None:
        if self._unsynced and not self._handle.closed:
            self._sync()
        self._handle.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _drop_torn_tail(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    with path.open("r+b") as handle:
        handle.truncate(keep)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
