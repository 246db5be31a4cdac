"""Offline forensics: read a possibly damaged or half-written file, check every rule, never write.

Every function here opens the file O_RDONLY and maps it read-only: no lock, no
truncation, no write, so it works on a read-only copy and on a file another
process is appending to. The file header may be damaged: the file tag is then
inferred from the record headers (see scan.py).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np

from memseg.blocks import BlockView, kind_names
from memseg.codec import crc32c
from memseg.container import (
    Commit,
    Located,
    check_region,
    check_trailer_follows_its_toc,
    parse_trailer,
)
from memseg.errors import CorruptError, MemsegError, NotMemsegError, VersionError
from memseg.format import (
    FILE_HEADER,
    RECORD_HEADER,
    TRAILER_RECORD_SIZE,
    TRAILER_REGION_CHECKED,
    Kind,
    State,
)
from memseg.framing import parse_header, read_payload
from memseg.model import SessionInfo
from memseg.records import decode_index, decode_session, decode_snapshot
from memseg.salvage import SalvageReport, SessionSalvage, salvage
from memseg.scan import (
    GAP,
    OK,
    TORN,
    Mapped,
    Progress,
    RecordInfo,
    mapped,
    mapped_bytes,
    open_view,
    scan,
    scan_bytes,
    scan_mapped,
    trailer_commit,
)
from memseg.store import Store
from memseg.store import open as open_store
from memseg.toc import TocEntry, decode_toc, load_toc
from memseg.view import Session


class Rescued:
    """Read access to a file whose header is damaged (quacks like a read-only Store)."""

    def __init__(self, path: str) -> None:
        self._stack = contextlib.ExitStack()
        try:
            self._m = self._stack.enter_context(mapped(path))
            self._view, self._located = open_view(self._m)
        except BaseException:
            self._stack.close()
            raise
        self.path = path
        self.header_error = self._m.header_error

    def sessions(self) -> list[SessionInfo]:
        """Every session of the newest intact commit, oldest first."""
        return self._view.infos()

    def session(self, key: uuid.UUID | str) -> Session:
        """One session by UUID, UUID string or unique name; KeyError if none."""
        return self._view.session(key)

    @property
    def commit(self) -> Commit | None:
        """The commit shown (None when no commit is intact)."""
        return self._view.commit

    @property
    def file_id(self) -> uuid.UUID:
        """The file id (only its first 8 bytes, the tag, when inferred)."""
        return self._view.header.file_id

    @property
    def located(self) -> Located:
        """How the shown commit was found (tail bytes, damaged and unverified commits)."""
        return self._located

    @property
    def tail_bytes(self) -> int:
        """Bytes after the shown commit."""
        return self._located.tail_bytes

    def close(self) -> None:
        """Unmap the file."""
        self._stack.close()

    def __enter__(self) -> Rescued:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_readonly(path: str | os.PathLike[str]) -> Store | Rescued:
    """memseg.open(path, "r"), falling back to a rescued view when the file header is damaged.

    Raises NotMemsegError when nothing of a memseg file is there, VersionError
    for a newer major version, OSError when the file cannot be opened.
    """
    spath = os.fspath(path)
    try:
        return open_store(spath, "r")
    except (CorruptError, NotMemsegError, VersionError):
        # Rescued re-raises VersionError when the header's CRC holds (a genuinely
        # newer file) and NotMemsegError when no record carries a file tag.
        return Rescued(spath)


# --- info --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What a file holds, from its header and newest intact commit."""

    path: str
    size: int
    file_id: uuid.UUID
    version: str
    created_ns: int
    header_error: str | None
    commit_seq: int | None
    commit_time_ns: int | None
    committed_bytes: int
    sessions_by_state: dict[str, int]
    actions: int
    checkpoints: int
    bytes_live: int
    bytes_archived: int
    # The newest commit's TOC record, the older TOC records (runs) it names, its trailer.
    bytes_toc: int
    # Committed bytes nothing current uses: superseded snapshots, INDEX chunks and TOC
    # records, older trailers, records no TOC entry claims.
    bytes_dead: int
    tail_bytes: int
    damaged_commits: list[tuple[int, str]]
    # Later trailers whose region CRC fails (SPEC.md section 11), newest first.
    unverified_commits: list[int]


def _toc_bytes(m: Mapped, commit: Commit) -> int:
    """Bytes of the records that make up a commit's table of contents, and its trailer."""
    state = load_toc(m.buf, commit.toc_offset, commit.trailer_offset, m.header.tag)
    runs = sum(parse_header(m.buf, run.offset, commit.trailer_offset, m.header.tag).end - run.offset
               for group in state.groups for run in group.runs)
    return runs + TRAILER_RECORD_SIZE


def info(path: str | os.PathLike[str]) -> FileInfo:
    """Summarise a file (works on damaged and half-written files)."""
    with mapped(path) as m:
        view, located = open_view(m)
        infos = view.infos()
        by_state = {s.name.lower(): 0 for s in State}
        live = archived = 0
        for s in infos:
            by_state[s.state.value] = by_state.get(s.state.value, 0) + 1
            if s.state == "archived":
                archived += s.stored_bytes
            else:
                live += s.stored_bytes
        committed = view.commit.end if view.commit else min(m.size, FILE_HEADER.size)
        toc = _toc_bytes(m, view.commit) if view.commit else 0
        h = m.header
        return FileInfo(
            path=m.path, size=m.size, file_id=h.file_id,
            version=f"{h.major}.{h.minor}" if m.header_error is None else "?",
            created_ns=h.created_ns,
            header_error=str(m.header_error) if m.header_error is not None else None,
            commit_seq=view.commit.seq if view.commit else None,
            commit_time_ns=view.commit.time_ns if view.commit else None,
            committed_bytes=committed, sessions_by_state=by_state,
            actions=sum(s.action_count for s in infos),
            checkpoints=sum(s.checkpoint_count for s in infos),
            bytes_live=live, bytes_archived=archived, bytes_toc=toc,
            bytes_dead=max(0, committed - min(m.size, FILE_HEADER.size) - live - archived - toc),
            tail_bytes=located.tail_bytes,
            damaged_commits=[(off, str(exc)) for off, exc in located.damaged_commits],
            unverified_commits=list(located.unverified),
        )


# --- verify ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule: where, which check (a stable reason code), and what it saw."""

    offset: int
    reason: str
    detail: str


@dataclass(slots=True)
class VerifyReport:
    """Every problem found in a file, and notes that are not problems (a torn tail)."""

    path: str
    size: int
    file_id: uuid.UUID
    records: int = 0
    commits: int = 0
    last_commit_seq: int | None = None
    committed_bytes: int = 0
    sessions: int = 0
    actions: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found (notes do not count)."""
        return not self.problems


_REF_KINDS = {"session": Kind.SESSION, "snapshot": Kind.SNAPSHOT, "index": Kind.INDEX,
              "block": Kind.BLOCK, "toc": Kind.TOC}


@dataclass(frozen=True, slots=True)
class _BlockFacts:
    """What the record pass learnt of an intact block, to check sessions without re-reading it."""

    session_id: uuid.UUID
    first_seq: int
    count: int
    checkpoint_count: int
    kind_counts: list[int]  # actions per kind code


class _Checker:
    """Per-record structural checks; references are checked against the record map."""

    def __init__(self, m: Mapped, records: list[RecordInfo], report: VerifyReport,
                 commits: dict[int, Commit | None]) -> None:
        self.m = m
        self.report = report
        self.starts = {r.offset: r for r in records if r.status == OK}
        self.commits = commits
        self.blocks: dict[int, _BlockFacts] = {}
        # Counts of each decoded snapshot, to hold TOC entries to them (records
        # only point backwards, so a TOC is checked after the snapshots it names).
        self.snap_counts: dict[int, tuple[int, int]] = {}

    def problem(self, offset: int, reason: str, detail: str) -> None:
        """Record a broken rule."""
        self.report.problems.append(Problem(offset, reason, detail))

    def ref(self, at: int, target: int, kind: Kind, what: str,
            session: uuid.UUID | None = None) -> None:
        """``target`` (referenced from the record at ``at``) must be an intact ``kind`` record before it."""
        rec = self.starts.get(target)
        if not 0 < target < at or rec is None:
            self.problem(at, "bad_reference", f"{what} -> {target} is not an intact record "
                         "before this one")
        elif rec.kind_code != kind:
            self.problem(at, "wrong_kind", f"{what} -> {target} is a {rec.kind}, not {kind.name}")
        elif session is not None and rec.session_id is not None and rec.session_id != session:
            self.problem(at, "wrong_session", f"{what} -> {target} belongs to session "
                         f"{rec.session_id}, not {session}")

    def values(self, block: BlockView) -> None:
        """Every payload, result and snapshot must decode as its stored type: CRCs only
        say the bytes are the ones written, not that a reader can use them."""
        placeholders = kind_names([""] * (int(block.kinds.max()) + 1 if block.count else 0))
        try:
            for action in block.actions(0, block.count, placeholders):
                action.value()
                action.result_value()
            for checkpoint in block.checkpoints():
                checkpoint.value()
        except MemsegError as exc:
            self.problem(block.offset, exc.reason, f"a value in the block does not decode: {exc}")

    def check(self, rec: RecordInfo) -> None:
        """Check one intact record: its padding, contents and references."""
        buf, tag, at = self.m.buf, self.m.header.tag, rec.offset
        pad_at = at + RECORD_HEADER.size + rec.stored_len
        if any(buf[pad_at : rec.end]):
            # The writer pads with zeros; padding is outside every CRC, so check it here.
            self.problem(pad_at, "padding", "record padding is not zero")
        try:
            head = parse_header(buf, at, self.m.size, tag)
            if rec.kind_code == Kind.BLOCK:
                block = BlockView(buf, head)
                block.blob()
                block.checkpoints()
                counts = np.bincount(block.kinds).tolist() if block.count else []
                self.blocks[at] = _BlockFacts(block.session_id, block.first_seq, block.count,
                                              block.checkpoint_count, counts)
                prev = int(getattr(block, "prev_block", 0))
                if prev:
                    self.ref(at, prev, Kind.BLOCK, "previous block", block.session_id)
                self.values(block)
                return
            if rec.kind_code == Kind.TRAILER:
                if self.commits.get(at) is None:  # run the checks again for their error
                    commit = parse_trailer(bytes(buf[at : rec.end]), at, tag)
                    read = lambda o, n: bytes(buf[o : o + n])  # noqa: E731
                    # An intact trailer no writer wrote where it stands (trailer_place).
                    check_trailer_follows_its_toc(read, commit, tag)
                    check_region(read, commit)
                return
            payload = read_payload(buf, head)
            if rec.kind_code == Kind.SESSION:
                decode_session(payload, at)
            elif rec.kind_code == Kind.SNAPSHOT:
                self.snapshot(at, payload)
            elif rec.kind_code == Kind.INDEX:
                sid, refs, *rest = decode_index(payload, at)
                for off in np.asarray(refs["offset"]).tolist():
                    self.ref(at, int(off), Kind.BLOCK, "index entry", sid)
                for prev in rest:
                    if prev:
                        self.ref(at, int(prev), Kind.INDEX, "previous index", sid)
            elif rec.kind_code == Kind.TOC:
                runs, entries = decode_toc(payload, at)
                for run in runs:
                    self.ref(at, run.offset, Kind.TOC, "TOC run")
                self.toc_entries(at, entries)
        except MemsegError as exc:
            self.problem(exc.offset if exc.offset is not None else at, exc.reason, str(exc))

    def toc_entries(self, at: int, entries: list[TocEntry]) -> None:
        """A TOC's entries: unique ids, references, counts equal to their snapshots'."""
        seen: set[uuid.UUID] = set()
        for e in entries:
            if e.session_id in seen:
                self.problem(at, "toc_entry", f"session {e.session_id} appears twice in one TOC")
            seen.add(e.session_id)
            self.ref(at, e.snapshot_offset, Kind.SNAPSHOT, "TOC entry snapshot", e.session_id)
            self.ref(at, e.session_offset, Kind.SESSION, "TOC entry session", e.session_id)
            counts = self.snap_counts.get(e.snapshot_offset)
            if counts is not None and counts != (e.action_count, e.checkpoint_count):
                self.problem(at, "count_mismatch", f"session {e.session_id}: TOC entry says "
                             f"{e.action_count}/{e.checkpoint_count} actions/checkpoints, its "
                             f"snapshot {counts[0]}/{counts[1]}")

    def snapshot(self, at: int, payload: bytes) -> None:
        """A snapshot's layout and references."""
        snap = decode_snapshot(payload, at)
        self.snap_counts[at] = (snap.action_count, snap.checkpoint_count)
        for name in ("session_offset", "index_offset", "last_block_offset"):
            target = int(getattr(snap, name, 0) or 0)
            if target:
                self.ref(at, target, _REF_KINDS[name.split("_")[-2]], f"snapshot {name}",
                         snap.session_id)


def is_torn_tail(tail: list[RecordInfo]) -> bool:
    """A writer that died leaves intact records, then at most one record cut by EOF
    (or zeros a file system allocated but never wrote)."""
    for i, rec in enumerate(tail):
        last = i == len(tail) - 1
        if rec.status == OK:
            continue
        if last and (rec.status == TORN or (rec.status == GAP and rec.reason == "zeros")):
            continue
        return False
    return True


def verify(path: str | os.PathLike[str], progress: Progress | None = None) -> VerifyReport:
    """Check every CRC and structural rule over the whole file, committed and not."""
    with mapped(path) as m:
        return verify_mapped(m, progress)


def verify_bytes(data: bytes) -> VerifyReport:
    """``verify`` of a file's bytes held in memory (raises NotMemsegError like ``verify``)."""
    return verify_mapped(mapped_bytes(data))


def verify_mapped(m: Mapped, progress: Progress | None = None) -> VerifyReport:
    """``verify`` on an already mapped file."""
    report = VerifyReport(m.path, m.size, m.header.file_id)
    if m.header_error is not None:
        e = m.header_error
        report.problems.append(Problem(e.offset or 0, e.reason, str(e)))
    half: Progress | None = None
    if progress is not None:
        total = 2 * max(m.size, 1)
        half = lambda done, _size: progress(done, total)  # noqa: E731
    records = scan_mapped(m, half)
    report.records = sum(1 for r in records if r.status == OK)
    commits = {r.offset: trailer_commit(m, r) for r in records
               if r.kind_code == Kind.TRAILER and r.status == OK}
    checker = _Checker(m, records, report, commits)
    trailers = [r for r in records if commits.get(r.offset) is not None]
    committed_end = trailers[-1].end if trailers else min(m.size, FILE_HEADER.size)
    report.committed_bytes = committed_end
    tail = [r for r in records if r.offset >= committed_end]
    torn = is_torn_tail(tail)
    for rec in records:
        if rec.status == OK:
            checker.check(rec)
        elif not (torn and rec.offset >= committed_end):
            detail = f"{rec.length} bytes" + (f" ({rec.kind} record)" if rec.kind != "-" else "")
            checker.problem(rec.offset, rec.reason or rec.status, detail)
    if tail and torn:
        report.notes.append(Problem(committed_end, "torn_tail", f"{m.size - committed_end} bytes "
                                    "after the last commit: a writer died or the copy was taken "
                                    "mid-write"))
    _check_commits([c for c in commits.values() if c is not None], checker, report, m)
    _check_sessions(m, report, checker, (lambda done, tot: progress(m.size + done * m.size // max(tot, 1),
                                                        2 * max(m.size, 1)))
                    if progress is not None else None)
    report.problems.sort(key=lambda p: p.offset)
    return report


def _check_commits(commits: list[Commit], checker: _Checker, report: VerifyReport,
                   m: Mapped) -> None:
    """Trailers chain back one to the next, seqs count up by one, each names its own TOC,
    and each region holds the bytes its writer wrote."""
    prev: Commit | None = None
    for commit in commits:
        at = commit.trailer_offset
        report.commits += 1
        # Readers check the region only of one-fsync commits (SPEC section 3); a large
        # commit's writer records its CRC too (a compaction writes 0). A mismatch there
        # means bytes that are not the writer's, such as a copy taken while a new writer
        # cut a dead one's tail and rewrote it: readers of the copy may then show the
        # dead writer's uncommitted blocks in place of this commit's.
        if (not commit.flags & TRAILER_REGION_CHECKED and commit.region_crc
                and commit.region_start <= at
                and crc32c(memoryview(m.buf)[commit.region_start : at]) != commit.region_crc):
            checker.problem(at, "region_crc", f"commit {commit.seq}'s region "
                            f"[{commit.region_start}, {at}) does not match its trailer's CRC: "
                            "these bytes are not all the ones its writer wrote")
        expected_prev = prev.trailer_offset if prev else 0
        if commit.prev_trailer_offset != expected_prev:
            checker.problem(at, "commit_chain", f"previous trailer is "
                            f"{commit.prev_trailer_offset}, expected {expected_prev}")
        if prev is not None and commit.seq != prev.seq + 1:
            checker.problem(at, "commit_seq", f"seq {commit.seq} after {prev.seq}")
        low = prev.end if prev else FILE_HEADER.size
        if commit.toc_offset < low:
            checker.problem(at, "bad_reference", f"TOC {commit.toc_offset} belongs to "
                            "an earlier commit")
        checker.ref(at, commit.toc_offset, Kind.TOC, "trailer TOC")
        prev = commit
    report.last_commit_seq = prev.seq if prev else None


def _check_sessions(m: Mapped, report: VerifyReport, checker: _Checker,
                    progress: Callable[[int, int], None] | None) -> None:
    """Every committed session's blocks, as the library's reader finds them, against what
    the record pass found in those blocks (so no payload is decoded twice)."""
    view, located = open_view(m)
    for offset, exc in located.damaged_commits:
        report.problems.append(Problem(offset, "damaged_commit", str(exc)))
    entries = list(view.entries.values())
    report.sessions = len(entries)
    for i, entry in enumerate(entries):
        if progress is not None:
            progress(i, len(entries))
        try:
            _check_session(Session(view, entry), entry, checker, report)
        except MemsegError as exc:
            report.problems.append(Problem(exc.offset if exc.offset is not None
                                           else entry.snapshot_offset, exc.reason,
                                           f"session {entry.session_id}: {exc}"))
    if progress is not None:
        progress(len(entries), max(len(entries), 1))


def _check_session(session: Session, entry: TocEntry, checker: _Checker,
                   report: VerifyReport) -> None:
    sid, at = entry.session_id, entry.snapshot_offset
    actions = session.actions  # the snapshot, INDEX chain and block chain, as a reader loads them
    kinds = len(actions.kinds)
    per_kind = [0] * kinds
    seq = 0
    refs = actions.refs
    for off, n, c in zip(refs["offset"].tolist(), refs["actions"].tolist(),
                         refs["checkpoints"].tolist(), strict=True):
        facts = checker.blocks.get(off)
        if facts is None:
            continue  # a damaged block: the record pass reported it
        if (facts.session_id, facts.first_seq, facts.count, facts.checkpoint_count) != (sid, seq, n, c):
            checker.problem(off, "block_mismatch", f"session {sid}: block does not match its "
                            f"reference (seq {seq}, {n} actions, {c} checkpoints)")
        if len(facts.kind_counts) > kinds:
            checker.problem(off, "block_layout", f"session {sid}: kind code outside the "
                            f"dictionary of {kinds} kinds")
        for code, k in enumerate(facts.kind_counts[:kinds]):
            per_kind[code] += k
        seq += n
    count = len(actions)
    checkpoints = session.checkpoints
    if [c.id for c in checkpoints] != list(range(len(checkpoints))) or any(
            not 0 <= c.at_seq <= count for c in checkpoints):
        checker.problem(at, "block_layout", f"session {sid}: checkpoint ids do not count up "
                        "from 0, or one lies past the actions")
    report.actions += count
    if count != entry.action_count or len(checkpoints) != entry.checkpoint_count:
        checker.problem(at, "count_mismatch", f"session {sid}: TOC says {entry.action_count}/"
                        f"{entry.checkpoint_count} actions/checkpoints, found {count}/"
                        f"{len(checkpoints)}")
    got = {k: n for k, n in zip(actions.kinds, per_kind, strict=True) if n}
    if got != actions.kind_counts():
        checker.problem(at, "kind_counts", f"session {sid}: per-kind counts of the snapshot "
                        "do not match its blocks")


__all__ = ["FileInfo", "Problem", "RecordInfo", "Rescued", "SalvageReport", "SessionSalvage",
           "VerifyReport", "info", "is_torn_tail", "open_readonly", "open_view", "salvage", "scan",
           "scan_bytes", "verify", "verify_bytes"]
