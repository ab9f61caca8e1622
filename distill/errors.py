"""One kind of user-facing error, and the CLI wrapper that prints it as one line."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

T = TypeVar("T")


class DistillError(Exception):
    """Bad input or environment: the message names the file and the field, on one line."""

    def __init__(self, where: str | Path, message: str, field: str | None = None):
        self.where = str(where)
        self.field = field
        text = f"{where}: {field}: {message}" if field else f"{where}: {message}"
        super().__init__(" ".join(text.split()))


def fail(where: str | Path, message: str, field: str | None = None) -> NoReturn:
    raise DistillError(where, message, field)


def cli(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a CLI main(): a DistillError becomes `error: ...` on stderr and exit 2; Ctrl-C exits 130."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except DistillError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
