"""The container: file header, commit trailers, and finding the newest commit.

Pure functions over a buffer (an mmap or bytes); the writer side lives in
appender.py. See SPEC.md "File header", "Trailer" and "Opening a file".
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from memseg.codec import crc32c
from memseg.errors import CorruptError, MemsegError, NotMemsegError, VersionError
from memseg.format import (
    COMMIT_SEQ_LIMIT,
    FILE_HEADER,
    FILE_HEADER_CRC_SPAN,
    MAGIC,
    RECORD_HEADER,
    RECORD_HEADER_CRC_SPAN,
    TRAILER,
    TRAILER_RECORD_SIZE,
    TRAILER_REGION_CHECKED,
    VERSION_MAJOR,
    VERSION_MINOR,
    Codec,
    Kind,
    record_size,
)
from memseg.framing import read_record

_SCAN_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class FileHeader:
    """The 64-byte header written once when the file is created."""

    file_id: uuid.UUID
    major: int
    minor: int
    created_ns: int

    @property
    def tag(self) -> int:
        """The 64-bit value every record header of this file starts with."""
        return file_tag(self.file_id)


def file_tag(file_id: uuid.UUID) -> int:
    """Records carry the first 8 bytes of the file id, so a memseg file stored
    as a payload inside another can never be mistaken for the outer file's records."""
    return int.from_bytes(file_id.bytes[:8], "little")


def encode_file_header(file_id: uuid.UUID, created_ns: int) -> bytes:
    """The header bytes of a new file."""
    head = FILE_HEADER.pack(
        MAGIC, VERSION_MAJOR, VERSION_MINOR, 0, file_id.bytes, created_ns, bytes(20), 0
    )
    return head[:FILE_HEADER_CRC_SPAN] + crc32c(head[:FILE_HEADER_CRC_SPAN]).to_bytes(4, "little")


def parse_file_header(buf: bytes | memoryview) -> FileHeader:
    """Validate the file header in the order SPEC.md gives."""
    if len(buf) < len(MAGIC) or bytes(buf[: len(MAGIC)]) != MAGIC:
        raise NotMemsegError("bad_magic", "not a memseg file", offset=0,
                             expected=MAGIC, actual=bytes(buf[: len(MAGIC)]))
    if len(buf) < FILE_HEADER.size:
        raise CorruptError("short_header", "file header is cut short", offset=0,
                           expected=FILE_HEADER.size, actual=len(buf))
    head = bytes(buf[: FILE_HEADER.size])
    _magic, major, minor, flags, fid, created, reserved, hcrc = FILE_HEADER.unpack(head)
    if major != VERSION_MAJOR:
        raise VersionError("major_version", "unsupported format version", offset=8,
                           expected=VERSION_MAJOR, actual=major)
    if crc32c(head[:FILE_HEADER_CRC_SPAN]) != hcrc:
        raise CorruptError("header_crc", "file header checksum", offset=FILE_HEADER_CRC_SPAN)
    if flags or any(reserved):
        raise CorruptError("reserved", "reserved file header bytes must be zero", offset=12)
    return FileHeader(uuid.UUID(bytes=fid), major, minor, created)


@dataclass(frozen=True, slots=True)
class Commit:
    """One commit: its trailer and the TOC it names."""

    trailer_offset: int
    toc_offset: int
    seq: int
    prev_trailer_offset: int
    time_ns: int
    region_crc: int = 0
    flags: int = 0

    @property
    def region_start(self) -> int:
        """Where this commit's bytes begin: the end of the previous commit."""
        if self.prev_trailer_offset:
            return self.prev_trailer_offset + TRAILER_RECORD_SIZE
        return FILE_HEADER.size

    @property
    def end(self) -> int:
        """Offset just past the trailer: the committed length of the file."""
        return self.trailer_offset + TRAILER_RECORD_SIZE


def encode_trailer_payload(commit: Commit) -> bytes:
    """The trailer payload of ``commit``."""
    return TRAILER.pack(commit.toc_offset, commit.seq, commit.prev_trailer_offset,
                        commit.time_ns, commit.region_crc, commit.flags)


def parse_trailer(window: bytes, offset: int, tag: int) -> Commit:
    """Validate the trailer record whose 64 bytes (``window``) stand at ``offset``."""
    try:
        head, payload = read_record(window, 0, TRAILER_RECORD_SIZE, tag, Kind.TRAILER)
    except MemsegError as exc:
        raise type(exc)(exc.reason, exc.detail, offset=offset + (exc.offset or 0),
                        expected=exc.expected, actual=exc.actual) from None
    # Stored raw, always: a compressed trailer would be shorter than the 72 bytes that
    # locating commits and their regions assume.
    if (head.codec != Codec.NONE or head.stored_len != TRAILER.size
            or head.raw_len != TRAILER.size or len(payload) != TRAILER.size):
        raise CorruptError("trailer_size", offset=offset, expected=TRAILER.size,
                           actual=head.stored_len if head.codec != Codec.NONE else head.raw_len)
    toc_offset, seq, prev, time_ns, region_crc, flags = TRAILER.unpack(payload)
    if flags & ~TRAILER_REGION_CHECKED:
        raise CorruptError("reserved", "unknown trailer flags", offset=offset, actual=flags)
    if not FILE_HEADER.size <= toc_offset < offset or toc_offset % 8:
        raise CorruptError("bad_reference", "trailer's TOC offset", offset=offset,
                           expected=f"aligned, in [{FILE_HEADER.size}, {offset})", actual=toc_offset)
    if prev and not (FILE_HEADER.size <= prev and prev + TRAILER_RECORD_SIZE <= offset):
        raise CorruptError("bad_reference", "trailer's previous-trailer offset", offset=offset,
                           expected=f"in [{FILE_HEADER.size}, {offset - TRAILER_RECORD_SIZE}]",
                           actual=prev)
    if not 1 <= seq < COMMIT_SEQ_LIMIT:
        raise CorruptError("bad_commit_seq", offset=offset, expected="in [1, 2**63)", actual=seq)
    return Commit(offset, toc_offset, seq, prev, time_ns, region_crc, flags)


def check_region(read: Reader, commit: Commit) -> None:
    """A one-fsync commit counts only if every byte it wrote reached the disk."""
    if not commit.flags & TRAILER_REGION_CHECKED:
        return
    start = commit.region_start
    if commit.toc_offset < start:
        raise CorruptError("bad_reference", "TOC before the commit's region",
                           offset=commit.trailer_offset, expected=f">= {start}",
                           actual=commit.toc_offset)
    if crc32c(read(start, commit.trailer_offset - start)) != commit.region_crc:
        raise CorruptError("region_crc", "the commit's bytes did not all reach the disk",
                           offset=commit.trailer_offset)


# Records other threads may append between a large commit's TOC and its trailer
# (SPEC section 10): data records, never another TOC or trailer.
_BETWEEN_TOC_AND_TRAILER = frozenset({Kind.SESSION, Kind.BLOCK, Kind.SNAPSHOT, Kind.INDEX})


def check_trailer_follows_its_toc(read: Reader, commit: Commit, tag: int) -> None:
    """A trailer is the first trailer after the TOC it names. Walking the record headers
    from that TOC must reach the trailer exactly, past data records only (a large commit
    lets other threads append blocks between the two). A copy of this file's own older
    trailer inside a recorded payload fails this: the walk from the TOC it names meets
    that TOC's real trailer, or steps over the copy. Only positive evidence counts: a
    damaged header on the way says nothing, and loading the TOC reports damage to it."""
    at, first = commit.toc_offset, True
    while at < commit.trailer_offset:
        head = read(at, RECORD_HEADER.size)
        if len(head) < RECORD_HEADER.size:
            return
        f_tag, kind, _, _, stored_len, _, _, _, head_crc = RECORD_HEADER.unpack(head)
        if f_tag != tag or crc32c(head[:RECORD_HEADER_CRC_SPAN]) != head_crc:
            return
        if first and kind != Kind.TOC:
            # An intact record of another kind: no writer's trailer names one, so this
            # is bytes that look like a trailer, skipped as the other misplaced ones.
            raise CorruptError("trailer_place", "the trailer names a record that is not a TOC",
                               offset=commit.trailer_offset, expected="TOC", actual=kind)
        if not first and kind not in _BETWEEN_TOC_AND_TRAILER:
            raise CorruptError("trailer_place", "a TOC or trailer stands between the trailer "
                               "and the TOC it names", offset=commit.trailer_offset,
                               expected=commit.trailer_offset, actual=at)
        at += record_size(stored_len)
        first = False
    if at != commit.trailer_offset:
        raise CorruptError("trailer_place", "the trailer lies inside a record",
                           offset=commit.trailer_offset, expected=commit.trailer_offset, actual=at)


Reader = Callable[[int, int], bytes]


def trailer_candidates(read: Reader, end: int, tag: int) -> Iterator[int]:
    """Offsets of records that look like trailers, newest first, scanning back from ``end``.

    Scans in 1 MiB chunks with numpy so a torn tail costs time proportional to
    the torn bytes, not to the file. Reads go through ``read`` (pread), not a
    map, so a writer cutting off the torn tail meanwhile cannot fault us.
    """
    hi = (end - TRAILER_RECORD_SIZE) & ~7
    kind_at = RECORD_HEADER.size - 24  # byte 8 of the header
    while hi >= FILE_HEADER.size:
        lo = max(FILE_HEADER.size, hi - _SCAN_CHUNK)
        chunk = read(lo, hi - lo + 16)
        words = np.frombuffer(chunk, dtype="<u8", count=len(chunk) // 8)
        for index in np.flatnonzero(words[: (hi - lo) // 8 + 1] == tag)[::-1]:
            at = 8 * int(index)
            if at + kind_at < len(chunk) and chunk[at + kind_at] == Kind.TRAILER:
                yield lo + at
        hi = lo - 8


@dataclass(frozen=True, slots=True)
class Located:
    """The newest usable commit, and what lies after it."""

    commit: Commit | None
    # Bytes after the commit (a torn tail, or damaged later commits).
    tail_bytes: int
    # Later trailers that were intact but whose TOC failed validation.
    damaged_commits: tuple[tuple[int, MemsegError], ...]
    # Later trailers that were intact but whose region CRC failed: a one-fsync
    # commit the disk kept only part of, or damage to an acknowledged one.
    unverified: tuple[int, ...] = ()


def locate_commit(
    read: Reader,
    size: int,
    tag: int,
    check_toc: Callable[[Commit], object],
) -> Located:
    """Find the newest commit whose trailer, region and TOC are intact.

    The fast path reads the trailer at the end of the file (O(1)); a torn or
    damaged tail falls back to scanning backwards. ``check_toc`` raises a
    MemsegError if the commit's TOC is unusable.
    """
    last = size - TRAILER_RECORD_SIZE
    if last >= FILE_HEADER.size and last % 8 == 0:
        try:
            commit = parse_trailer(read(last, TRAILER_RECORD_SIZE), last, tag)
            check_trailer_follows_its_toc(read, commit, tag)
            check_region(read, commit)
            check_toc(commit)
            return Located(commit, 0, ())
        except MemsegError:
            pass  # torn or damaged: the scan below sorts out which
    damaged: list[tuple[int, MemsegError]] = []
    unverified: list[int] = []
    for offset in trailer_candidates(read, size, tag):
        try:
            commit = parse_trailer(read(offset, TRAILER_RECORD_SIZE), offset, tag)
            check_trailer_follows_its_toc(read, commit, tag)
        except MemsegError:
            continue  # a torn trailer, or bytes that merely look like one
        try:
            check_region(read, commit)
        except MemsegError:
            unverified.append(offset)
            continue
        try:
            check_toc(commit)
        except MemsegError as exc:
            damaged.append((offset, exc))
            continue
        return Located(commit, size - commit.end, tuple(damaged), tuple(unverified))
    return Located(None, size - FILE_HEADER.size, tuple(damaged), tuple(unverified))


def refuse_damaged_commits(located: Located) -> None:
    """A writer refuses a file with a later commit whose TOC does not load (section 11):
    cutting it would destroy a commit that was once complete."""
    if located.damaged_commits:
        offset, exc = located.damaged_commits[0]
        raise CorruptError(
            "damaged_commit", f"a later commit is damaged ({exc}); "
            "refusing to append over it: read it with mode 'r' or salvage it", offset=offset)


def kept_tail_start(read: Reader, located: Located, size: int, tag: int) -> int | None:
    """Where the bytes a writer opening this file keeps for salvage begin (section 11):
    after an unverified commit, or a TOC whose trailer is damaged; None if it keeps none."""
    committed = located.commit.end if located.commit else FILE_HEADER.size
    if located.unverified or (
            committed < size and tail_holds_a_damaged_commit(read, committed, size, tag)):
        return committed
    return None


def _written_trailer_at(read: Reader, offset: int, toc_offset: int, tag: int) -> bool:
    """Whether the 72 bytes at ``offset`` are a trailer that was written for the TOC at
    ``toc_offset``, damaged or not. A flipped bit spoils at most one of three witnesses:
    the header (its CRC, and kind TRAILER), the payload (the CRC the header gives), and the
    payload's first field (the TOC's offset). Zeros and garbage spoil all; another record
    has an intact header of another kind."""
    slot = read(offset, TRAILER_RECORD_SIZE)
    if len(slot) < TRAILER_RECORD_SIZE:
        return False
    head, payload = slot[: RECORD_HEADER.size], slot[RECORD_HEADER.size :]
    f_tag, kind, _, _, _, _, payload_crc, _, head_crc = RECORD_HEADER.unpack(head)
    names_this_toc = int.from_bytes(payload[:8], "little") == toc_offset
    if f_tag == tag and crc32c(head[:RECORD_HEADER_CRC_SPAN]) == head_crc:
        # An intact header says what the record is: another record (a SESSION of exactly
        # 40 bytes, say) is not a trailer, however its payload looks. A whole trailer that
        # names another TOC was not written for this one: it is part of a copy of the file
        # (TOC and trailer together) inside a recorded payload.
        if kind != Kind.TRAILER:
            return False
        return crc32c(payload) != payload_crc or names_this_toc
    return crc32c(payload) == payload_crc or names_this_toc


def tail_holds_a_damaged_commit(read: Reader, start: int, end: int, tag: int) -> bool:
    """Whether [start, end) holds a commit whose TOC is intact and whose trailer is there
    but fails its checks: an acknowledged commit whose trailer was damaged later (or,
    rarely, a crash that garbled part of the trailer's own write). A writer keeps such a
    tail rather than cut it. The trailer is "there" when its 72 bytes directly follow the
    TOC and still show it was written (``_written_trailer_at``); zeros, garbage, another
    record (during a large commit's first fsync other threads append blocks behind its
    TOC) or fewer bytes are a commit that never got its trailer: never acknowledged, since
    its fsync comes after, and the tail is an ordinary torn one."""
    pos = start
    while pos + RECORD_HEADER.size <= end:
        chunk = read(pos, min(_SCAN_CHUNK, end - pos))
        words = np.frombuffer(chunk, dtype="<u8", count=len(chunk) // 8)
        for index in np.flatnonzero(words == tag):
            at = 8 * int(index)
            head = chunk[at : at + RECORD_HEADER.size]
            if len(head) < RECORD_HEADER.size or head[8] != Kind.TOC:
                continue
            if crc32c(head[:RECORD_HEADER_CRC_SPAN]) != int.from_bytes(head[-4:], "little"):
                continue
            stored_len = int.from_bytes(head[12:16], "little")
            after = pos + at + record_size(stored_len)
            if after + TRAILER_RECORD_SIZE <= end and _written_trailer_at(read, after, pos + at, tag):
                return True
        pos += max(8, len(chunk) - RECORD_HEADER.size) & ~7
    return False
