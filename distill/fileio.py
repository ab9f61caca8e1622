"""Files that are never half-written: atomic replace for whole files, fsync'd appends for logs."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import unicodedata
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from .errors import fail


def check_writable(path: str | Path, flag: str = "--out", *, directory: bool = False) -> None:
    """One line now rather than a traceback after the work: `path` (a file; a dir with `directory`) is not the
    other kind, and its nearest existing parent is a writable directory. Creates nothing."""
    path = Path(path)
    if path.is_dir() != directory and path.exists():
        fail(path, "is a directory (a file is expected)" if path.is_dir() else "is a file (a directory is expected)",
             flag)
    if path.is_file() and not os.access(path, os.W_OK):
        fail(path, "is read-only", flag)
    ancestor = path if directory and path.is_dir() else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        fail(path, f"{ancestor} is a file, so nothing can be written under it", flag)
    if not os.access(ancestor, os.W_OK | os.X_OK):  # access(2) also says no on a read-only mount, even to root
        read_only = os.statvfs(ancestor).f_flag & os.ST_RDONLY
        fail(path, f"cannot write in {ancestor}: {os.strerror(errno.EROFS if read_only else errno.EACCES)}", flag)


@contextlib.contextmanager
def os_errors_as_one_line(path: str | Path, doing: str = "write", flag: str | None = None) -> Iterator[None]:
    """An OSError in the block (permission, read-only or full disk, a parent that is a file) becomes one line
    naming `path`."""
    try:
        yield
    except OSError as err:
        if isinstance(err, (NotADirectoryError, FileExistsError)):
            reason = "a parent is a file, not a directory"
        else:
            reason = err.strerror or type(err).__name__
        fail(path, f"cannot {doing}: {reason}", flag)


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Write to a temp file beside `path`, fsync, then rename over it; on error nothing is left behind."""
    path = Path(path)
    with os_errors_as_one_line(path):
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory (a file is expected)")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode a plain open() would
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            with os_errors_as_one_line(path):  # a full disk shows here
                handle.flush()
                os.fsync(handle.fileno())
        with os_errors_as_one_line(path):
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def staged_dir(out_dir: str | Path, *, previous: Path | None = None) -> Iterator[Path]:
    """Build a directory in a hidden temp dir beside `out_dir`; swap it in only when the block completes.

    On error the temp dir is removed and `out_dir` is untouched. The old `out_dir` is deleted once the new
    one is in place, or kept as `previous` (replacing an older `previous`) when one is given.
    """
    out_dir = Path(out_dir)
    with os_errors_as_one_line(out_dir):
        if out_dir.exists() and not out_dir.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "is a file (a directory is expected)")
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    stage.chmod(0o777 & ~_umask())  # mkdtemp makes it private; a model dir is meant to be shared
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    swap_in(stage, out_dir, previous=previous)


def swap_in(stage: Path, out_dir: Path, *, previous: Path | None = None) -> None:
    """Rename a finished `stage` to `out_dir`; the old `out_dir` becomes `previous` or is removed after."""
    old = previous or out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
    stage.rename(out_dir)
    if previous is None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def exclusive_output(path: str | Path, flag: str = "--out") -> Iterator[None]:
    """Hold an exclusive lock on the output `path` for the block: a second writer fails at once with one line
    (two collects appending to one file would ask the teacher twice and duplicate every record).

    The lock is a hidden `.NAME.lock` beside `path` (flock, released by the kernel when the process dies),
    removed at the end, with the parent dirs made for it when they stay empty (a run that fails writes nothing);
    a lock file removed by its previous holder between our open and our flock is retried.
    """
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    made = [parent for parent in lock.parents if not parent.exists()]  # deepest first
    while True:
        with os_errors_as_one_line(path, flag=flag):
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            fail(path, f"another run (pid {holder}) is writing this file; wait for it to finish or stop it", flag)
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)
        for parent in made:
            try:
                parent.rmdir()
            except OSError:  # not empty: the run wrote something there
                break


def cache_dir(*parts: str) -> Path:
    """The user's cache for large derived files (offline bases, the llama.cpp source): $DISTILL_CACHE, else
    ~/.cache/droidhead. Never inside the checkout."""
    root = Path(os.environ.get("DISTILL_CACHE") or Path.home() / ".cache" / "droidhead").expanduser()
    return root.joinpath(*parts)


def utc_now(timespec: str = "seconds") -> str:
    """The one timestamp format of every record we write: ISO 8601 in UTC with a Z (2026-11-25T09:30:00Z)."""
    return datetime.now(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


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


def read_text(path: str | Path, what: str = "file") -> str:
    """The file's text as UTF-8; one clear error when it is missing, a directory or not UTF-8."""
    path = Path(path)
    if not path.is_file():
        fail(path, f"{what} not found" if not path.exists() else f"not a file ({what} expected)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        fail(path, f"not UTF-8 text (byte {err.start}: {err.reason})")
    except OSError as err:
        fail(path, f"cannot read: {err.strerror}")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        fail(path, f"invalid JSON at line {err.lineno}: {err.msg}")


def read_jsonl(path: str | Path, *, allow_empty: bool = False, torn_tail_ok: bool = False) -> list[dict]:
    """Every line must be a JSON object (blank lines are skipped); the error names file and line.

    `torn_tail_ok`: skip a last line without a newline that is a cut-off record (`{...` that does not parse),
    the trace of a kill -9 mid-append; JsonlAppender cuts it when it next opens the file. Reads only.
    """
    import jsonlines

    path = Path(path)
    # Split on "\n" only: str.splitlines() would also split inside a string holding U+2028 or U+0085, which
    # JSON allows unescaped (json.dumps(..., ensure_ascii=False) writes them as they are).
    lines = read_text(path).split("\n")
    if torn_tail_ok and _is_torn_record(lines[-1]):
        lines[-1] = ""
    reader = jsonlines.Reader(lines)
    records = []
    try:
        for record in reader.iter(type=dict, skip_empty=True):
            records.append(record)
    except jsonlines.InvalidLineError as err:
        cause = err.__cause__
        reason = f"invalid JSON: {cause.msg}" if isinstance(cause, json.JSONDecodeError) else "expected a JSON object"
        fail(f"{path}:{err.lineno}", reason)
    if not records and not allow_empty:
        fail(path, "no records")
    return records


# Terminal escape sequences (colours, cursor moves, titles) pasted or logged with a prompt: CSI, OSC, 2-char.
_ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")


def clean_prompt(line: str) -> str:
    """A prompt line as text: terminal escape sequences and control characters dropped (NUL, BEL, DEL, C1),
    other line and paragraph breaks (\r, U+0085, U+2028, tab...) turned into spaces, ends stripped."""
    line = _ANSI_ESCAPE.sub("", line)
    return "".join(" " if ch.isspace() else ch for ch in line
                   if ch.isspace() or unicodedata.category(ch) != "Cc").strip()


def prompt_lines(text: str) -> list[str]:
    """The lines of a prompt file, cleaned (`clean_prompt`). Split on "\n" (so "\r\n" too) only: str.splitlines()
    would also split at U+0085, U+2028 and friends inside one prompt."""
    return [clean_prompt(line) for line in text.split("\n")]


def read_prompts(path: str | Path) -> list[str]:
    """One prompt a line; blank lines and `#` comments are skipped; see `prompt_lines`."""
    path = Path(path)
    lines = prompt_lines(read_text(path, "input file"))
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
        with os_errors_as_one_line(self.path):
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
    """Make the file end in a newline before appending: cut a record torn by a kill -9 (`{...` that does not
    parse), end a whole record that only lacks its newline, and touch nothing else (a file that is not ours,
    such as a prompt file given as --out by mistake, is refused with one line)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    tail = data[keep:].decode("utf-8", errors="replace")
    if _is_torn_record(tail):
        with path.open("r+b") as handle:
            handle.truncate(keep)
        return
    try:
        whole = isinstance(json.loads(tail), dict)
    except ValueError:
        whole = False
    if not whole:
        last_line = data.count(b"\n") + 1
        fail(f"{path}:{last_line}",
             "not a JSON record and not one torn by a crash; is this the right file? (left as it is)")
    with path.open("ab") as handle:
        handle.write(b"\n")


def _is_torn_record(line: str) -> bool:
    """A last line cut off mid-write: it starts like one of our records but does not parse."""
    if not line.lstrip().startswith("{"):
        return False
    try:
        json.loads(line)
    except ValueError:
        return True
    return False


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
