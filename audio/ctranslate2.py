"""Read a CTranslate2 ``model.bin`` into named arrays, without the CTranslate2 runtime.

The file (little-endian) is: ``u32`` format version, the spec name, ``u32`` spec revision,
``u32`` variable count; per variable its name, ``u8`` rank, one ``u32`` per dimension, ``u8`` dtype,
``u32`` byte count and the raw bytes; then ``u32`` alias count and (alias, target) name pairs.
A string is a ``u16`` length (NUL included), the UTF-8 bytes and a NUL. In an int8 file a weight
``X/weight`` comes with ``X/weight_scale`` (per output row, ``127 / amax``); :func:`read_model_bin`
returns it dequantised as float32 so that callers see one kind of file.

Example:
    >>> import io, struct
    >>> def s(t): b = t.encode() + b"\\0"; return struct.pack("<H", len(b)) + b
    >>> blob = (struct.pack("<I", 6) + s("TestSpec") + struct.pack("<II", 1, 1) + s("w") + bytes([1])
    ...         + struct.pack("<I", 2) + bytes([0]) + struct.pack("<I", 8) + struct.pack("<2f", 1.5, -2)
    ...         + struct.pack("<I", 1) + s("v") + s("w"))
    >>> spec = parse_model_bin(blob)
    >>> spec.name, spec.variables["w"].tolist(), spec.variables["v"] is spec.variables["w"]
    ('TestSpec', [1.5, -2.0], True)
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# CTranslate2's DataType enum, in file order.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BFLOAT16 = 5


class CTranslate2FormatError(ValueError):
    """The bytes are not a CTranslate2 model file this reader understands."""


@dataclass
class ModelBin:
    """What a ``model.bin`` holds: its spec name and revision, and every variable by name (aliases
    resolved to the same array)."""

    name: str
    revision: int
    version: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)


class _Cursor:
    def __init__(self, data: bytes | memoryview) -> None:
        self.data, self.pos = memoryview(data), 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise CTranslate2FormatError(f"the file ends at byte {len(self.data)} inside a record that needs "
                                         f"{self.pos + n}: it is truncated (a missing part of a split file?)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def string(self) -> str:
        (n,) = self.unpack("<H")
        return bytes(self.take(n)).rstrip(b"\0").decode("utf-8")


def parse_model_bin(data: bytes | memoryview) -> ModelBin:
    """Parse the bytes of a ``model.bin`` (see the module docstring for the layout)."""
    cur = _Cursor(data)
    (version,) = cur.unpack("<I")
    if version < 5 or version > 6:
        raise CTranslate2FormatError(f"CTranslate2 format version {version} is not supported (5 or 6 expected)")
    spec = ModelBin(name=cur.string(), revision=cur.unpack("<I")[0], version=version)
    (count,) = cur.unpack("<I")
    raw: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = cur.string()
        (rank,) = cur.unpack("<B")
        shape = cur.unpack(f"<{rank}I") if rank else ()
        dtype, nbytes = cur.unpack("<BI")
        buf = cur.take(nbytes)
        if dtype == _BFLOAT16:  # numpy has no bfloat16: widen the 16 bits into the top of a float32
            arr = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif dtype in _DTYPES:
            arr = np.frombuffer(buf, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<"))
        else:
            raise CTranslate2FormatError(f"variable {name!r} has unknown dtype code {dtype}")
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise CTranslate2FormatError(f"variable {name!r}: {nbytes} bytes do not fill the shape {shape}")
        raw[name] = arr.reshape(shape)
    (n_alias,) = cur.unpack("<I")
    for _ in range(n_alias):
        alias, target = cur.string(), cur.string()
        spec.aliases[alias] = target
    if cur.pos != len(cur.data):
        raise CTranslate2FormatError(f"{len(cur.data) - cur.pos} bytes follow the last record: not a single model file")
    spec.variables = _dequantise(raw)
    for alias, target in spec.aliases.items():
        if target not in spec.variables:
            raise CTranslate2FormatError(f"alias {alias!r} points at the missing variable {target!r}")
        spec.variables[alias] = spec.variables[target]
    return spec


def _dequantise(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, arr in raw.items():
        if name.endswith("_scale"):
            continue
        scale = raw.get(f"{name}_scale")
        if scale is not None and arr.dtype in (np.int8, np.int16):
            arr = arr.astype(np.float32) / scale.astype(np.float32).reshape(-1, *([1] * (arr.ndim - 1)))
        out[name] = arr
    return out


def read_parts(paths: Sequence[Path]) -> bytes:
    """The bytes of a model file, concatenated from its parts in order (one path for an unsplit file)."""
    return b"".join(Path(p).read_bytes() for p in paths)


def content_hash(data: bytes) -> str:
    """SHA-256 of the model bytes: the conversion cache's key."""
    return hashlib.sha256(data).hexdigest()
