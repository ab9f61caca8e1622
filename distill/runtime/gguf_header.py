"""Read the metadata keys of a GGUF header without loading the model (standard library only).

llama.cpp answers every unloadable file with the same "Failed to load model from file"; the router wants to say
why (docs/runtime.md: `bad_model` vs `no_tokenizer`), so after a failed load it looks at the header itself.
Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (magic, version, tensor count, KV count,
then each key as a length-prefixed string, a uint32 value type and the value).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

MAGIC = b"GGUF"
# value type -> struct format of one scalar (8 = string, 9 = array are handled apart)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
MAX_KEYS = 1 << 16  # a header claiming more is corrupt (real ones hold a few dozen)


class HeaderError(ValueError):
    """The file is not a readable GGUF header (not GGUF, truncated, corrupt)."""


def gguf_keys(path: str | Path) -> list[str]:
    """The metadata keys of a GGUF file, in file order; HeaderError when the header cannot be read."""
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != MAGIC:
                raise HeaderError("not a GGUF file (bad magic)")
            version, _tensors, count = struct.unpack("<IQQ", _read(handle, 20))
            if version < 2 or count > MAX_KEYS:
                raise HeaderError(f"unsupported GGUF version {version} or corrupt key count {count}")
            keys = []
            for _ in range(count):
                keys.append(_string(handle))
                _skip_value(handle, struct.unpack("<I", _read(handle, 4))[0])
            return keys
    except OSError as err:
        raise HeaderError(f"cannot read: {err.strerror or err}") from None
    except (struct.error, UnicodeDecodeError) as err:
        raise HeaderError(f"corrupt header: {err}") from None


def has_tokenizer(keys: list[str]) -> bool:
    """llama.cpp needs the vocabulary (`tokenizer.ggml.tokens`) and its type (`tokenizer.ggml.model`)."""
    return "tokenizer.ggml.tokens" in keys and "tokenizer.ggml.model" in keys


def _read(handle: BinaryIO, size: int) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise HeaderError("truncated header")
    return data


def _string(handle: BinaryIO) -> str:
    (size,) = struct.unpack("<Q", _read(handle, 8))
    if size > 1 << 24:
        raise HeaderError(f"corrupt string length {size}")
    return _read(handle, size).decode("utf-8")


def _skip_value(handle: BinaryIO, kind: int) -> None:
    if kind in _SCALARS:
        _read(handle, struct.calcsize(_SCALARS[kind]))
    elif kind == _STRING:
        (size,) = struct.unpack("<Q", _read(handle, 8))
        handle.seek(size, 1)
    elif kind == _ARRAY:
        item, count = struct.unpack("<IQ", _read(handle, 12))
        if item in _SCALARS:
            handle.seek(struct.calcsize(_SCALARS[item]) * count, 1)
        else:
            for _ in range(count):
                _skip_value(handle, item)
    else:
        raise HeaderError(f"unknown value type {kind}")
