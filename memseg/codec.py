"""Checksums, compression and value encoding: the only module that calls crc32c and lz4."""

from __future__ import annotations

from typing import Any

import crc32c as _crc32c
import lz4.block
import orjson

from memseg.errors import CorruptError
from memseg.format import LZ4_MAX_RATIO, Codec, ValueType

# Below this size LZ4 rarely wins and costs a call; such payloads stay raw.
MIN_COMPRESS = 64


def crc32c(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data``, continuing from ``start`` to checksum pieces."""
    return int(_crc32c.crc32c(data, start))


def compress(raw: bytes | memoryview) -> tuple[Codec, bytes]:
    """LZ4-compress ``raw`` if that makes it smaller; return the codec used and the bytes."""
    if len(raw) >= MIN_COMPRESS:
        packed: bytes = lz4.block.compress(raw, store_size=False)
        if len(packed) < len(raw):
            return Codec.LZ4, packed
    return Codec.NONE, bytes(raw)


def decompress(codec: int, stored: bytes | memoryview, raw_len: int, offset: int) -> bytes:
    """Undo ``compress``; ``offset`` locates the data in the file for error reports."""
    if codec == Codec.NONE:
        if len(stored) != raw_len:
            raise CorruptError(
                "length_mismatch", "raw section length", offset=offset,
                expected=raw_len, actual=len(stored),
            )
        return bytes(stored)
    if codec != Codec.LZ4:
        raise CorruptError("bad_codec", offset=offset, expected="0 or 1", actual=codec)
    if raw_len > len(stored) * LZ4_MAX_RATIO + 64:
        raise CorruptError(
            "length_mismatch", "raw length exceeds what LZ4 can expand to",
            offset=offset, expected=f"<= {len(stored) * LZ4_MAX_RATIO + 64}", actual=raw_len,
        )
    try:
        out: bytes = lz4.block.decompress(stored, uncompressed_size=raw_len)
    except Exception as exc:  # lz4 raises LZ4BlockError, a plain Exception subclass
        raise CorruptError("decompress", str(exc), offset=offset) from None
    if len(out) != raw_len:
        raise CorruptError(
            "length_mismatch", "decompressed length", offset=offset,
            expected=raw_len, actual=len(out),
        )
    return out


_BYTES, _STR, _JSON, _NONE = (int(t) for t in (ValueType.BYTES, ValueType.STR, ValueType.JSON,
                                                ValueType.NONE))


# orjson writes datetimes and dataclasses without being asked, and a value would
# then read back as something else (a string, a dict). Hand them to _not_json
# instead, so they are refused as json.dumps refuses them. (UUIDs and plain enums
# have no such option: they are stored as their string and their value.)
_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _not_json(value: object) -> object:
    # orjson hands over subclasses it does not write itself; json.dumps writes these
    # as their base type (numpy.float64 as a number, a namedtuple as an array).
    if isinstance(value, float):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _plain_keys(value: object) -> object:
    """``value`` with the keys of its objects made plain ``str``: json.dumps writes a str
    subclass key (a StrEnum member) as its text, orjson only takes exact str keys. Any
    other key raises TypeError, as a key that is not a string must."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"a JSON object's keys must be str, not {type(k).__name__}")
            out[str.__str__(k)] = _plain_keys(v)
        return out
    if isinstance(value, list | tuple):
        return [_plain_keys(v) for v in value]
    return value


def _dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value, default=_not_json, option=_STRICT)
    except TypeError as exc:
        if "Dict key must be str" in str(exc):
            try:  # the rare slow path: only when orjson refused a key
                return orjson.dumps(_plain_keys(value), default=_not_json, option=_STRICT)
            except (TypeError, RecursionError) as again:
                exc = again if isinstance(again, TypeError) else exc
        raise TypeError(f"value is not JSON-serialisable: {exc}") from None


def _not_utf8(exc: UnicodeEncodeError) -> TypeError:
    # A lone surrogate: orjson refuses it inside JSON with a TypeError too.
    return TypeError(f"str is not valid UTF-8: {exc.reason} at index {exc.start}")


def encode_value(value: object) -> tuple[int, bytes]:
    """Turn a payload/result/snapshot into stored bytes and the ValueType that restores its type."""
    # Exact-type checks first: this runs twice per recorded action.
    kind = type(value)
    if kind is bytes:
        return _BYTES, value  # type: ignore[return-value]
    if kind is dict:
        return _JSON, _dumps(value)
    if kind is str:
        try:  # no call on the way: this is the hot path for text payloads
            return _STR, value.encode("utf-8")  # type: ignore[attr-defined]
        except UnicodeEncodeError as exc:
            raise _not_utf8(exc) from None
    if value is None:
        return _NONE, b""
    if isinstance(value, bytes | bytearray | memoryview):
        return ValueType.BYTES, bytes(value)
    if isinstance(value, str):
        try:
            return ValueType.STR, value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _not_utf8(exc) from None
    if isinstance(value, dict | list | tuple | int | float | bool):
        return ValueType.JSON, _dumps(value)
    raise TypeError(
        f"payload must be bytes, str, or a JSON value (dict, list, ...), not {type(value).__name__}"
    )


def decode_value(value_type: int, data: bytes, offset: int) -> Any:
    """Give back the value ``encode_value`` stored, in its original type."""
    if value_type == ValueType.BYTES:
        return data
    if value_type == ValueType.NONE:
        return None
    try:
        if value_type == ValueType.STR:
            return data.decode("utf-8")
        if value_type == ValueType.JSON:
            return orjson.loads(data)
    except (UnicodeDecodeError, orjson.JSONDecodeError) as exc:
        raise CorruptError("bad_value", str(exc), offset=offset) from None
    raise CorruptError("bad_value", "unknown value type", offset=offset,
                       expected="0..3", actual=value_type)


def json_bytes(value: object) -> bytes:
    """Serialise session metadata (a JSON object) to bytes."""
    return _dumps(value)


def json_object(data: bytes | memoryview, offset: int) -> dict[str, Any]:
    """Parse session metadata, which must be a JSON object."""
    try:
        obj = orjson.loads(bytes(data)) if len(data) else {}
    except orjson.JSONDecodeError as exc:
        raise CorruptError("bad_meta", str(exc), offset=offset) from None
    if not isinstance(obj, dict):
        raise CorruptError("bad_meta", "metadata is not a JSON object", offset=offset)
    return obj


def utf8(data: bytes | memoryview, offset: int, what: str) -> str:
    """Decode a stored UTF-8 string, reporting damage as corruption."""
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptError("bad_string", f"{what}: {exc}", offset=offset) from None
