"""Records: encode one, and decode/validate one at an offset of a buffer.

Works on bytes and memoryviews only, never on file handles. Validation order
follows SPEC.md "Reading a record".
"""

from __future__ import annotations

from dataclasses import dataclass

from memseg.codec import compress, crc32c, decompress
from memseg.errors import CorruptError
from memseg.format import (
    MAX_PAYLOAD,
    RECORD_HEADER,
    RECORD_HEADER_CRC_SPAN,
    Codec,
    Kind,
    padded,
)

_KINDS = frozenset(int(k) for k in Kind)
_PAD = bytes(8)


@dataclass(frozen=True, slots=True)
class RecordHeader:
    """A validated record header and where its payload lies."""

    offset: int
    kind: int
    codec: int
    stored_len: int
    raw_len: int
    payload_crc: int

    @property
    def payload_offset(self) -> int:
        return self.offset + RECORD_HEADER.size

    @property
    def end(self) -> int:
        """Offset just past the record, padding included."""
        return self.payload_offset + padded(self.stored_len)


def encode_record(tag: int, kind: Kind, raw: bytes, *, allow_compress: bool = True) -> bytes:
    """Frame ``raw`` as a record of ``kind``: header, payload (LZ4 when it helps), padding."""
    if len(raw) > MAX_PAYLOAD:
        raise ValueError(f"record payload of {len(raw)} bytes exceeds the {MAX_PAYLOAD} limit")
    codec, stored = compress(raw) if allow_compress else (Codec.NONE, raw)
    return frame(tag, kind, codec, stored, len(raw))


def frame(tag: int, kind: int, codec: int, stored: bytes, raw_len: int) -> bytes:
    """Build a record from an already-encoded payload."""
    head = record_header(tag, kind, codec, len(stored), raw_len, crc32c(stored))
    return head + stored + _PAD[: padded(len(stored)) - len(stored)]


def record_header(tag: int, kind: int, codec: int, stored_len: int, raw_len: int,
                  payload_crc: int) -> bytes:
    """The 32-byte header of a record whose payload has ``payload_crc``."""
    head = RECORD_HEADER.pack(tag, kind, codec, 0, stored_len, raw_len, payload_crc, 0, 0)
    return head[:RECORD_HEADER_CRC_SPAN] + crc32c(head[:RECORD_HEADER_CRC_SPAN]).to_bytes(4, "little")


def parse_header(buf: bytes | memoryview, offset: int, limit: int, tag: int) -> RecordHeader:
    """Validate the record header at ``offset``; the record must end by ``limit``."""
    limit = min(limit, len(buf))
    if offset % 8 or offset < 0:
        raise CorruptError("misaligned", "record offset", offset=offset, expected="multiple of 8")
    if offset + RECORD_HEADER.size > limit:
        raise CorruptError("record_bounds", "record header past the end", offset=offset,
                           expected=f"<= {limit}", actual=offset + RECORD_HEADER.size)
    head = bytes(buf[offset : offset + RECORD_HEADER.size])
    f_tag, kind, codec, flags, stored_len, raw_len, pcrc, reserved, hcrc = RECORD_HEADER.unpack(head)
    if f_tag != tag:
        raise CorruptError("record_tag", "record does not belong to this file", offset=offset,
                           expected=f"{tag:#018x}", actual=f"{f_tag:#018x}")
    if crc32c(head[:RECORD_HEADER_CRC_SPAN]) != hcrc:
        raise CorruptError("header_crc", "record header checksum", offset=offset)
    if kind not in _KINDS:
        raise CorruptError("record_kind", offset=offset, expected="1..6", actual=kind)
    if codec not in (Codec.NONE, Codec.LZ4):
        raise CorruptError("bad_codec", offset=offset, expected="0 or 1", actual=codec)
    if flags or reserved:
        raise CorruptError("reserved", "reserved header fields must be zero", offset=offset)
    if stored_len > MAX_PAYLOAD or raw_len > MAX_PAYLOAD:
        raise CorruptError("record_length", offset=offset, expected=f"<= {MAX_PAYLOAD}",
                           actual=max(stored_len, raw_len))
    end = offset + RECORD_HEADER.size + padded(stored_len)
    if end > limit:
        raise CorruptError("record_bounds", "record payload past the end", offset=offset,
                           expected=f"<= {limit}", actual=end)
    return RecordHeader(offset, kind, codec, stored_len, raw_len, pcrc)


def read_payload(buf: bytes | memoryview, head: RecordHeader) -> bytes:
    """Check the payload CRC and return the decompressed payload."""
    stored = memoryview(buf)[head.payload_offset : head.payload_offset + head.stored_len]
    if crc32c(stored) != head.payload_crc:
        raise CorruptError("payload_crc", "record payload checksum", offset=head.offset)
    return decompress(head.codec, stored, head.raw_len, head.payload_offset)


def read_record(
    buf: bytes | memoryview, offset: int, limit: int, tag: int, kind: Kind
) -> tuple[RecordHeader, bytes]:
    """Read and fully validate the record of ``kind`` at ``offset``."""
    head = parse_header(buf, offset, limit, tag)
    if head.kind != kind:
        raise CorruptError("wrong_kind", "reference points at another kind of record",
                           offset=offset, expected=kind.name, actual=head.kind)
    return head, read_payload(buf, head)
