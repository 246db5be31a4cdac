"""The record map of a file, from the first byte to the last, for damaged files too.

Records start with the 8-byte file tag at 8-aligned offsets and carry a header
CRC, so after damage the walk resynchronises on the next aligned word equal to
the tag whose header checksum holds. Only reads: the file is mapped read-only.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from memseg.codec import crc32c, decompress
from memseg.container import (
    Commit,
    FileHeader,
    Located,
    check_region,
    check_trailer_follows_its_toc,
    parse_file_header,
    parse_trailer,
)
from memseg.errors import CorruptError, MemsegError, NotMemsegError, VersionError
from memseg.format import (
    FILE_HEADER,
    FILE_HEADER_CRC_SPAN,
    MAX_PAYLOAD,
    RECORD_HEADER,
    RECORD_HEADER_CRC_SPAN,
    TRAILER_RECORD_SIZE,
    Codec,
    Kind,
    padded,
)
from memseg.fs import OS_FS, map_whole
from memseg.view import View, locate_view

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) as a long run advances."""

_CHUNK = 4 << 20
# Record status codes (a RecordInfo's ``status``).
OK = "ok"
PAYLOAD_CRC = "payload_crc"  # the header holds, the payload does not
TORN = "torn"  # the header holds, the payload runs past the end of the file
GAP = "gap"  # bytes no intact record header covers
_KIND_NAMES = {int(k): k.name for k in Kind}


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """One record (or one stretch of unreadable bytes) of the file."""

    offset: int
    # Bytes it occupies: header + padded payload, or the gap's length, or up to EOF if torn.
    length: int
    kind: str  # SESSION, BLOCK, SNAPSHOT, INDEX, TOC, TRAILER, or "-" for a gap
    kind_code: int
    codec: int
    stored_len: int
    raw_len: int
    status: str  # ok, payload_crc, torn, gap
    # Why a gap is one (the reason code the first failed check gave).
    reason: str
    # Seq of the commit whose trailer is the first intact one at or after this record;
    # None past the last intact trailer (an uncommitted tail).
    commit: int | None
    # The session a SESSION, BLOCK, SNAPSHOT or INDEX record belongs to (when readable).
    session_id: uuid.UUID | None

    @property
    def end(self) -> int:
        """Offset just past it."""
        return self.offset + self.length

    @property
    def intact(self) -> bool:
        """True when header and payload checksums hold."""
        return self.status == OK


@dataclass(frozen=True, slots=True)
class Mapped:
    """A file mapped read-only, with its header (read or inferred)."""

    path: str
    buf: bytes | memoryview
    size: int
    header: FileHeader
    # Set when the file header itself failed to parse and the tag was inferred.
    header_error: MemsegError | None
    # Reads bytes at an offset without the map (pread on a file): finding the newest
    # commit scans the tail, which a writer may cut meanwhile, and touching cut pages
    # of a map kills the process with SIGBUS.
    read: Callable[[int, int], bytes]


@contextlib.contextmanager
def mapped(path: str | os.PathLike[str]) -> Iterator[Mapped]:
    """Map ``path`` read-only and find its file tag, inferring it if the header is damaged.

    Raises NotMemsegError when nothing of a memseg file is there, VersionError for
    a newer major version. Opens O_RDONLY, never locks: safe on a file being written.
    """
    spath = os.fspath(path)
    fh = OS_FS.open(spath, write=False, create=False)  # refuses a FIFO, device or directory
    try:
        size, buf = map_whole(fh)
    except BaseException:
        fh.close()
        raise
    view: bytes | memoryview = memoryview(buf) if size else b""
    try:
        header, error = _header(view, size)
        yield Mapped(spath, view, size, header, error, fh.read)
    finally:
        fh.close()
        if isinstance(view, memoryview):
            with contextlib.suppress(BufferError):
                view.release()
        close = getattr(buf, "close", None)
        if close is not None:
            with contextlib.suppress(BufferError):
                close()


def mapped_bytes(data: bytes, path: str = "<bytes>") -> Mapped:
    """A file's bytes held in memory, as ``mapped`` gives them (for fuzzing and tests)."""
    header, error = _header(data, len(data))
    return Mapped(path, data, len(data), header, error,
                  lambda offset, length: data[offset : offset + length])


def _header(buf: bytes | memoryview, size: int) -> tuple[FileHeader, MemsegError | None]:
    try:
        return parse_file_header(buf[: min(size, FILE_HEADER.size)]), None
    except VersionError as exc:
        head = bytes(buf[: FILE_HEADER.size])
        if crc32c(head[:FILE_HEADER_CRC_SPAN]) == int.from_bytes(head[FILE_HEADER_CRC_SPAN:], "little"):
            raise  # a genuine newer format, not a damaged version field
        return _inferred(buf, size, exc)
    except MemsegError as exc:
        return _inferred(buf, size, exc)


def _inferred(buf: bytes | memoryview, size: int, exc: MemsegError) -> tuple[FileHeader, MemsegError]:
    """A stand-in header for a file whose own header is unreadable, tagged from its records."""
    tag = infer_tag(buf, size)
    if tag is None:
        if isinstance(exc, NotMemsegError):
            raise exc
        raise NotMemsegError("no_records", f"file header damaged ({exc.reason}) and no "
                             "intact record found", offset=0) from None
    file_id = uuid.UUID(bytes=tag.to_bytes(8, "little") + bytes(8))
    return FileHeader(file_id, 0, 0, 0), exc


def _header_ok(buf: bytes | memoryview, at: int) -> bool:
    head = bytes(buf[at : at + RECORD_HEADER.size])
    return len(head) == RECORD_HEADER.size and crc32c(head[:RECORD_HEADER_CRC_SPAN]) == int.from_bytes(
        head[RECORD_HEADER_CRC_SPAN:], "little")


def infer_tag(buf: bytes | memoryview, size: int) -> int | None:
    """The file tag, from the record headers, when the file header is unreadable."""
    start = FILE_HEADER.size
    if size >= start + RECORD_HEADER.size and _header_ok(buf, start):
        return int.from_bytes(buf[start : start + 8], "little")
    # The tag is the most frequent aligned word among headers whose CRC holds;
    # try the most frequent words of the first chunks until one checks out.
    for lo in range(start, size - RECORD_HEADER.size + 1, _CHUNK):
        count = (min(size, lo + _CHUNK) - lo) // 8
        words = np.frombuffer(buf, "<u8", count, lo)
        values, freq = np.unique(words, return_counts=True)
        for value in values[np.argsort(freq)[::-1][:16]]:
            for index in np.flatnonzero(words == value)[:64]:
                if value and _header_ok(buf, lo + 8 * int(index)):
                    return int(value)
    return None


def next_header(buf: bytes | memoryview, start: int, size: int, tag: int) -> int:
    """The first aligned offset >= ``start`` holding a header with this tag and a good CRC."""
    start = padded(start)
    tag_u8 = np.uint64(tag)
    lo = start
    while lo + RECORD_HEADER.size <= size:
        count = (min(size, lo + _CHUNK) - lo) // 8
        words = np.frombuffer(buf, "<u8", count, lo)
        for index in np.flatnonzero(words == tag_u8):
            at = lo + 8 * int(index)
            if _header_ok(buf, at):
                return at
        lo += 8 * count
    return size


def _session_of(buf: bytes | memoryview, kind: int, payload_at: int, stored_len: int,
                raw_len: int, codec: int) -> uuid.UUID | None:
    """The session id at the start of a SESSION/BLOCK/SNAPSHOT/INDEX payload, if stored raw."""
    if kind not in (Kind.SESSION, Kind.BLOCK, Kind.SNAPSHOT, Kind.INDEX) or stored_len < 16:
        return None
    if codec == Codec.NONE:
        return uuid.UUID(bytes=bytes(buf[payload_at : payload_at + 16]))
    if kind != Kind.BLOCK and raw_len >= 16:
        # Small metadata records: worth decompressing to say whose they are.
        with contextlib.suppress(MemsegError):
            raw = decompress(codec, buf[payload_at : payload_at + stored_len], raw_len, payload_at)
            return uuid.UUID(bytes=raw[:16])
    return None


def walk(m: Mapped, progress: Progress | None = None) -> Iterator[RecordInfo]:
    """Every record and gap from the end of the file header to EOF, in order (commit unset)."""
    buf, size, tag = m.buf, m.size, m.header.tag
    off = min(size, FILE_HEADER.size)
    step = 0
    while off < size:
        if progress is not None and off >= step:
            progress(off, size)
            step = off + _CHUNK
        if size - off < RECORD_HEADER.size:
            yield RecordInfo(off, size - off, "-", 0, 0, 0, 0, TORN, "short_header", None, None)
            return
        head = bytes(buf[off : off + RECORD_HEADER.size])
        f_tag, kind, codec, flags, stored_len, raw_len, pcrc, reserved, _ = RECORD_HEADER.unpack(head)
        reason = ""
        if f_tag != tag:
            reason = "record_tag"
        elif not _header_ok(buf, off):
            reason = "header_crc"
        elif kind not in _KIND_NAMES:
            reason = "record_kind"
        elif codec not in (Codec.NONE, Codec.LZ4) or flags or reserved:
            reason = "reserved"
        elif stored_len > MAX_PAYLOAD or raw_len > MAX_PAYLOAD:
            reason = "record_length"
        if reason:
            nxt = next_header(buf, off + 8, size, tag)
            if reason == "record_tag" and not any(buf[off:nxt]):
                reason = "zeros"
            yield RecordInfo(off, nxt - off, "-", 0, 0, 0, 0, GAP, reason, None, None)
            off = nxt
            continue
        at = off + RECORD_HEADER.size
        end = at + padded(stored_len)
        if end > size and (nxt := next_header(buf, at, size, tag)) < size:
            # Its length runs past EOF, yet intact records follow: the length
            # lies, or a torn record was kept and later commits appended after it.
            yield RecordInfo(off, nxt - off, "-", 0, 0, 0, 0, GAP, "record_bounds", None, None)
            off = nxt
            continue
        if end > size:
            sid = _session_of(buf, kind, at, 16 if size - at >= 16 else 0, 0, Codec.NONE) \
                if codec == Codec.NONE else None
            yield RecordInfo(off, size - off, _KIND_NAMES[kind], kind, codec, stored_len, raw_len,
                             TORN, "record_bounds", None, sid)
            return
        status = OK if crc32c(memoryview(buf)[at : at + stored_len]) == pcrc else PAYLOAD_CRC
        if status == PAYLOAD_CRC:
            # A damaged record's length cannot be trusted either: resume at
            # the first intact header inside it, so no record hides behind it.
            end = min(end, next_header(buf, at, end, tag))
        sid = _session_of(buf, kind, at, stored_len, raw_len,
                          codec if status == OK or kind == Kind.BLOCK else -1)
        yield RecordInfo(off, end - off, _KIND_NAMES[kind], kind, codec, stored_len, raw_len,
                         status, "" if status == OK else status, None, sid)
        off = end
    if progress is not None:
        progress(size, size)


def scan_mapped(m: Mapped, progress: Progress | None = None) -> list[RecordInfo]:
    """The record map with each record's commit filled in."""
    records = list(walk(m, progress))
    out: list[RecordInfo] = []
    pending: list[RecordInfo] = []
    for rec in records:
        pending.append(rec)
        seq = trailer_seq(m, rec)
        if seq is not None:
            out += [_with_commit(r, seq) for r in pending]
            pending = []
    return out + pending


def trailer_seq(m: Mapped, rec: RecordInfo) -> int | None:
    """The commit seq of an intact trailer record whose commit region checks out, else None."""
    commit = trailer_commit(m, rec)
    return commit.seq if commit is not None else None


def trailer_commit(m: Mapped, rec: RecordInfo) -> Commit | None:
    """The commit of an intact trailer record whose commit region checks out, else None."""
    if rec.kind_code != Kind.TRAILER or rec.status != OK or rec.length != TRAILER_RECORD_SIZE:
        return None
    buf = m.buf
    try:
        commit = parse_trailer(bytes(buf[rec.offset : rec.end]), rec.offset, m.header.tag)
        check_trailer_follows_its_toc(lambda at, n: bytes(buf[at : at + n]), commit, m.header.tag)
        check_region(lambda at, n: bytes(buf[at : at + n]), commit)
    except CorruptError:
        return None
    return commit


def _with_commit(rec: RecordInfo, seq: int) -> RecordInfo:
    return RecordInfo(rec.offset, rec.length, rec.kind, rec.kind_code, rec.codec, rec.stored_len,
                      rec.raw_len, rec.status, rec.reason, seq, rec.session_id)


def scan_bytes(data: bytes) -> list[RecordInfo]:
    """``scan`` of a file's bytes held in memory."""
    return _record_map(mapped_bytes(data))


def scan(path: str | os.PathLike[str], progress: Progress | None = None) -> list[RecordInfo]:
    """The record map of ``path`` from the first byte to the last (see RecordInfo)."""
    with mapped(path) as m:
        return _record_map(m, progress)


def _record_map(m: Mapped, progress: Progress | None = None) -> list[RecordInfo]:
    """scan_mapped, led by a gap for a damaged file header so a scan shows it too.

    An intact header is not a record and is left out, as before; verify and
    salvage report a damaged one themselves, so only the public scan adds it.
    """
    records = scan_mapped(m, progress)
    if m.header_error is None:
        return records
    first_commit = records[0].commit if records else None
    head = RecordInfo(0, min(m.size, FILE_HEADER.size), "-", 0, 0, 0, 0, GAP,
                      f"file_header:{m.header_error.reason}", first_commit, None)
    return [head, *records]


def open_view(m: Mapped) -> tuple[View, Located]:
    """The newest intact commit of a mapped file, as the library's reader sees it."""
    view, located, _ = locate_view(m.read, memoryview(m.buf), m.size, m.header)
    return view, located
