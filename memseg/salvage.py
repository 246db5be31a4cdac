"""Salvage: copy everything intact out of a damaged or half-written file into a new one.

The source is only mapped read-only. Sessions are rebuilt from their intact
BLOCK records (which carry the session id and first seq), named and described
by the newest commit's TOC or else by their SESSION and SNAPSHOT records, so
the actions of sessions whose final commit never landed are recovered too. The
destination is written through public APIs only: sessions whose committed records
are all intact are copied as stored (``Store.export``: every time and byte kept);
the others are recorded anew, action by action, past their lost blocks.
"""

from __future__ import annotations

import bisect
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from memseg.blocks import BlockView, kind_names
from memseg.codec import decode_value, json_object
from memseg.container import Commit
from memseg.errors import MemsegError
from memseg.format import FILE_HEADER, Kind, State, ValueType
from memseg.framing import parse_header, read_payload
from memseg.model import Checkpoint
from memseg.recorder import Recorder
from memseg.records import SessionRecord, Snapshot, decode_session, decode_snapshot
from memseg.scan import GAP, OK, PAYLOAD_CRC, Mapped, Progress, RecordInfo, mapped, open_view, scan_mapped
from memseg.store import Store
from memseg.store import open as open_store
from memseg.toc import TocEntry
from memseg.view import Session


@dataclass(slots=True)
class SessionSalvage:
    """What became of one session."""

    session_id: uuid.UUID
    name: str | None
    # The state written to the destination (active, ended, archived).
    state: str
    # "committed" (in the newest intact commit), "uncommitted" (only after it), or both.
    source: str
    actions: int = 0
    checkpoints: int = 0
    # Seq ranges [start, stop) of the source known to be lost.
    lost: list[tuple[int, int]] = field(default_factory=list)
    lost_checkpoints: int = 0
    damaged_blocks: int = 0
    notes: list[str] = field(default_factory=list)
    # True when its records were copied as stored (every timestamp kept); else its
    # actions were recorded anew (created/ended times are those of the salvage).
    copied: bool = False

    @property
    def lost_actions(self) -> int:
        """Actions known lost."""
        return sum(stop - start for start, stop in self.lost)

    @property
    def complete(self) -> bool:
        """True when nothing of it was found lost or damaged."""
        return not self.lost and not self.damaged_blocks and not self.lost_checkpoints


@dataclass(frozen=True, slots=True)
class DamagedRegion:
    """Bytes of the source that could not be used."""

    offset: int
    length: int
    reason: str


@dataclass(slots=True)
class SalvageReport:
    """What was recovered and what was lost, by session."""

    src: str
    dst: str
    sessions: list[SessionSalvage] = field(default_factory=list)
    # Sessions seen only in damaged records, or deleted ones left out on purpose.
    skipped: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    damaged: list[DamagedRegion] = field(default_factory=list)
    torn_tail_bytes: int = 0

    @property
    def actions(self) -> int:
        """Actions recovered."""
        return sum(s.actions for s in self.sessions)

    @property
    def lost_actions(self) -> int:
        """Actions known lost."""
        return sum(s.lost_actions for s in self.sessions)

    @property
    def complete(self) -> bool:
        """True when nothing was found damaged and every session came over whole."""
        return not self.damaged and not self.skipped and all(s.complete for s in self.sessions)


@dataclass(frozen=True, slots=True)
class _BlockRef:
    """An intact block, by offset: views are re-made when written, so that
    decompressed payloads are never all held at once."""

    offset: int
    session_id: uuid.UUID
    first_seq: int
    count: int
    checkpoint_count: int
    prev_block: int
    # Its sections are checked apart, as a reader reads them: damage to one loses
    # only what that one holds.
    blob_ok: bool = True
    checkpoints_ok: bool = True


@dataclass(slots=True)
class _Found:
    """Everything the scan found about one session."""

    blocks: list[_BlockRef] = field(default_factory=list)
    damaged_blocks: int = 0
    session: tuple[int, SessionRecord] | None = None
    snapshot: tuple[int, Snapshot] | None = None
    # Where its first intact record is, to write sessions in the order they began.
    first_offset: int = -1

    def seen(self, offset: int) -> None:
        if self.first_offset < 0:
            self.first_offset = offset


def _advance(offset: int, snap: Snapshot) -> tuple[int, int, int, bool, int]:
    """How far a snapshot has got: counts and kind dictionary only grow, and an end comes
    after everything else (no ACTIVE snapshot follows an ENDED one with equal counts)."""
    return (snap.action_count, snap.checkpoint_count, len(snap.kinds),
            snap.ended_ns is not None, offset)


@dataclass(slots=True)
class _Plan:
    """What will be written for one session."""

    out: SessionSalvage
    meta: dict[str, Any]
    kinds: tuple[str, ...]
    chosen: list[_BlockRef]
    state: State
    status: str | None
    # The session's TOC entry and the blocks it names, when it has one.
    entry: TocEntry | None = None
    committed: frozenset[int] = frozenset()
    # Whether a reader reads the committed session whole, without an error.
    readable: bool = False


def _collect(m: Mapped, records: list[RecordInfo], report: SalvageReport) -> dict[uuid.UUID, _Found]:
    found: dict[uuid.UUID, _Found] = {}
    buf, tag = m.buf, m.header.tag
    for rec in records:
        # A BLOCK whose record CRC fails may still have every section intact (the
        # damage may be in padding): its section CRCs decide below, as for a reader.
        if rec.status != OK and not (rec.kind_code == Kind.BLOCK and rec.status == PAYLOAD_CRC):
            if rec.status == GAP or rec.commit is not None or rec.kind_code == Kind.BLOCK:
                report.damaged.append(DamagedRegion(rec.offset, rec.length, rec.reason or rec.status))
            if rec.kind_code == Kind.BLOCK and rec.session_id is not None:
                found.setdefault(rec.session_id, _Found()).damaged_blocks += 1
            continue
        if rec.kind_code not in (Kind.SESSION, Kind.BLOCK, Kind.SNAPSHOT):
            continue
        try:
            head = parse_header(buf, rec.offset, m.size, tag)
            if rec.kind_code == Kind.BLOCK:
                block = BlockView(buf, head)
                blob_error, ckpt_error = _section_error(block.blob), _section_error(block.checkpoints)
                if blob_error and (ckpt_error or not block.checkpoint_count):
                    raise blob_error
                if ckpt_error and not block.count:
                    raise ckpt_error
                for error in (blob_error, ckpt_error):
                    if error is not None:
                        report.damaged.append(DamagedRegion(rec.offset, rec.length, error.reason))
                item = found.setdefault(block.session_id, _Found())
                item.damaged_blocks += bool(blob_error or ckpt_error)
                item.blocks.append(_BlockRef(block.offset, block.session_id, block.first_seq,
                                             block.count, block.checkpoint_count, block.prev_block,
                                             blob_error is None, ckpt_error is None))
                del block
            elif rec.kind_code == Kind.SESSION:
                srec = decode_session(read_payload(buf, head), rec.offset)
                item = found.setdefault(srec.session_id, _Found())
                item.session = (rec.offset, srec)
            else:
                snap = decode_snapshot(read_payload(buf, head), rec.offset)
                item = found.setdefault(snap.session_id, _Found())
                # The most advanced snapshot wins (counts and kind dictionary only
                # grow), the later of equals: a stale copy further on must not win.
                if item.snapshot is None or _advance(rec.offset, snap) > _advance(*item.snapshot):
                    item.snapshot = (rec.offset, snap)
            item.seen(rec.offset)
        except MemsegError as exc:
            report.damaged.append(DamagedRegion(rec.offset, rec.length, exc.reason))
            if rec.kind_code == Kind.BLOCK and rec.session_id is not None:
                found.setdefault(rec.session_id, _Found()).damaged_blocks += 1
    return found


def _section_error(read: Callable[[], object]) -> MemsegError | None:
    """The error reading one section of a block raises, if any."""
    try:
        read()
    except MemsegError as exc:
        return exc
    return None


def _committed_blocks(session: Session) -> set[int]:
    """Offsets of the blocks the commit names for a session (empty if its index is damaged)."""
    try:
        return {int(o) for o in session.actions.refs["offset"].tolist()}
    except MemsegError:
        return set()


def _chain(blocks: list[_BlockRef], preferred: set[int], known: int
           ) -> tuple[list[_BlockRef], list[tuple[int, int]]]:
    """Walk a session's intact blocks in seq order; report the seq ranges none covers.

    At each step the next block starts at the seq reached. A block the commit names
    wins, then one whose link points at the block before (the writer's own chain),
    then the first in the file after it; and no other block is taken where it would
    cover the start of a block the commit names. So a committed block is never
    displaced by a block a dead writer left at the same seqs, and blocks of checkpoints
    only (which all start at the same seq) are taken one after another.
    """
    by_seq: dict[int, list[_BlockRef]] = {}
    by_prev: dict[int, list[_BlockRef]] = {}
    for b in sorted(blocks, key=lambda b: b.offset):
        by_seq.setdefault(b.first_seq, []).append(b)
        by_prev.setdefault(b.prev_block, []).append(b)
    seqs = sorted(by_seq)
    committed_seqs = sorted({b.first_seq for b in blocks if b.offset in preferred})
    used: set[int] = set()
    chosen: list[_BlockRef] = []
    lost: list[tuple[int, int]] = []
    expected, last = 0, 0

    def fenced(here: list[_BlockRef], seq: int) -> list[_BlockRef]:
        # No uncommitted block may run over the start of the next committed one.
        i = bisect.bisect_right(committed_seqs, seq)
        fence = committed_seqs[i] if i < len(committed_seqs) else None
        return [b for b in here if fence is None or b.first_seq + b.count <= fence]

    def candidates(seq: int) -> list[_BlockRef]:
        # Later in the file than the block before, unless the commit names it.
        here = [b for b in by_seq.get(seq, ()) if b.offset not in used
                and (b.offset > last or b.offset in preferred)]
        return here if any(b.offset in preferred for b in here) else fenced(here, seq)

    pref_left: dict[int, int] = {}  # unused blocks the commit names, by seq
    for b in blocks:
        if b.offset in preferred:
            pref_left[b.first_seq] = pref_left.get(b.first_seq, 0) + 1

    def linked() -> list[_BlockRef]:
        # The common case, without scanning every block at this seq: the block linked to
        # the one before, if the commit names it or names none here.
        out = [b for b in by_prev.get(last, ()) if b.first_seq == expected
               and b.offset not in used and b.offset > last]
        named = [b for b in out if b.offset in preferred]
        if named or pref_left.get(expected, 0):
            return named
        return fenced(out, expected)

    while True:
        here = linked() or candidates(expected)
        if not here:
            i = bisect.bisect_right(seqs, expected)
            while i < len(seqs) and not (here := candidates(seqs[i])):
                i += 1
            if not here:
                break
            lost.append((expected, seqs[i]))
        b = min(here, key=lambda b: (b.offset not in preferred, b.prev_block != last, b.offset))
        chosen.append(b)
        used.add(b.offset)
        if b.offset in preferred:
            pref_left[b.first_seq] -= 1
        expected, last = b.first_seq + b.count, b.offset
    if expected < known:
        lost.append((expected, known))
    # A block whose payloads are damaged keeps its place (and its checkpoints).
    lost += [(b.first_seq, b.first_seq + b.count) for b in chosen if b.count and not b.blob_ok]
    return chosen, sorted(lost)


def _write_session(store: Store, m: Mapped, plan: _Plan, tick: Callable[[int], None]) -> None:
    """Record one session's recovered actions and checkpoints into ``store``, in seq order."""
    out, chosen = plan.out, plan.chosen

    def view(ref: _BlockRef) -> BlockView:
        return BlockView(m.buf, parse_header(m.buf, ref.offset, m.size, m.header.tag))

    rec = store.start_session(out.name, meta=plan.meta, session_id=out.session_id)
    checkpoints: list[Checkpoint] = sorted(
        (c for ref in chosen if ref.checkpoint_count and ref.checkpoints_ok
         for c in view(ref).checkpoints()),
        key=lambda c: (c.at_seq, c.id))
    names = list(plan.kinds)
    named = kind_names(names)  # made again only when placeholders extend ``names``
    retyped: list[int] = []  # one entry per value kept as bytes
    ci = 0
    for ref in chosen:
        if not ref.blob_ok:
            tick(ref.count)
            continue  # its actions are counted lost
        block = view(ref)
        top = int(block.kinds.max()) if block.count else -1
        # Codes past the newest surviving kind dictionary get a placeholder name.
        if top >= len(names):
            names += [f"unknown-kind-{code}" for code in range(len(names), top + 1)]
            named = kind_names(names)
        for action in block.actions(0, block.count, named):
            while ci < len(checkpoints) and checkpoints[ci].at_seq <= action.seq:
                _copy_checkpoint(rec, checkpoints[ci], retyped)
                ci += 1
            ptype, pdata = _decodable(action.payload_type, action.payload, retyped)
            rtype, rdata = (action.result_type, b"") if action.result is None else \
                _decodable(action.result_type, action.result, retyped)
            rec._record_stored(action.kind, ptype, pdata, rtype, rdata, action.ts_ns)
        del block
        tick(ref.count)
    for c in checkpoints[ci:]:
        _copy_checkpoint(rec, c, retyped)
    if retyped:
        out.notes.append(f"{len(retyped)} values did not decode as their stored type; "
                         "their bytes were kept as bytes values")
    out.actions = sum(b.count for b in chosen if b.blob_ok)
    out.checkpoints = len(checkpoints)
    if plan.state == State.ACTIVE:
        rec.flush()  # closing the store leaves it active
        return
    rec.end(plan.status)
    if plan.state == State.ARCHIVED:
        store.archive(out.session_id)


def _decodable(value_type: int, data: bytes, retyped: list[int]) -> tuple[int, bytes]:
    """A stored value to copy as it is, or as bytes when it does not decode as its type
    (intact records can still hold such a value): salvage keeps the bytes either way."""
    try:
        decode_value(value_type, data, -1)
    except MemsegError:
        retyped.append(value_type)
        return int(ValueType.BYTES), data
    return value_type, data


def _copy_checkpoint(rec: Recorder, c: Checkpoint, retyped: list[int]) -> None:
    """Copy a checkpoint's stored snapshot (a NONE-typed one, which no writer makes,
    arrives as empty bytes)."""
    vtype, data = _decodable(c.snapshot_type, c.snapshot, retyped)
    if vtype == ValueType.NONE:
        retyped.append(vtype)
        vtype = int(ValueType.BYTES)
    rec._checkpoint_stored(vtype, data, c.ts_ns, flush=False)


def salvage(src: str | os.PathLike[str], dst: str | os.PathLike[str],
            progress: Progress | None = None) -> SalvageReport:
    """Recover everything intact in ``src`` into the new file ``dst``; never writes ``src``.

    Raises FileExistsError if ``dst`` exists, NotMemsegError if ``src`` holds
    nothing of a memseg file.
    """
    ssrc, sdst = os.fspath(src), os.fspath(dst)
    if os.path.exists(sdst):
        raise FileExistsError(f"{sdst} exists; salvage writes a new file")
    report = SalvageReport(ssrc, sdst)
    with mapped(ssrc) as m:
        total = 2 * max(m.size, 1)
        records = scan_mapped(m, (lambda d, _t: progress(d, total)) if progress else None)
        view, _located = open_view(m)
        tail = [r for r in records if r.commit is None]
        report.torn_tail_bytes = m.size - tail[0].offset if tail else 0
        if m.header_error is not None:
            # Sessions are then rebuilt, not copied: their times are the salvage's own.
            report.damaged.append(DamagedRegion(0, FILE_HEADER.size, m.header_error.reason))
        found = _collect(m, records, report)
        entries: dict[uuid.UUID, TocEntry] = dict(view.entries)
        order = sorted(set(found) | set(entries), key=lambda s: (
            entries[s].session_offset if s in entries else found[s].first_offset))
        plans: list[_Plan] = []
        for sid in order:
            item = found.get(sid, _Found())
            entry = entries.get(sid)
            if entry is None and item.session is None and item.snapshot is None and not item.blocks:
                report.skipped.append((sid, "only damaged records remain"))
                continue
            try:
                session = view.session(sid) if entry else None
            except MemsegError:
                session = None
            plans.append(_plan(session, entry, item))
        done = 0
        work = max(1, sum(len(p.chosen) for p in plans))

        def tick(_n: int) -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(m.size + m.size * done // work, total)

        intact = {r.offset for r in records if r.status == OK}
        copied = _copy_whole(ssrc, sdst, view.commit, [
            p for p in plans if m.header_error is None and _whole(p, intact)])
        copied_ids = {p.out.session_id for p in copied}
        with open_store(sdst, "a") as store:
            for plan in plans:
                if plan.out.session_id in copied_ids:
                    plan.out.actions = plan.entry.action_count if plan.entry else 0
                    plan.out.checkpoints = plan.entry.checkpoint_count if plan.entry else 0
                    if plan.state == State.ARCHIVED:
                        store.archive(plan.out.session_id)  # an exported copy arrives ended
                    for _ in plan.chosen:
                        tick(0)
                else:
                    _write_session(store, m, plan, tick)
                report.sessions.append(plan.out)
    return report


def _whole(plan: _Plan, intact: set[int]) -> bool:
    """Whether a session can be copied as stored: committed, every record it names intact,
    nothing lost, nothing newer after its commit."""
    entry = plan.entry
    return (entry is not None and plan.readable and plan.out.complete
            and plan.state == entry.state
            and entry.session_offset in intact and entry.snapshot_offset in intact
            and {b.offset for b in plan.chosen} == plan.committed
            and plan.committed <= intact)


def _copy_whole(src: str, dst: str, commit: Commit | None, plans: list[_Plan]) -> list[_Plan]:
    """Copy whole sessions as stored with the public export (timestamps, checkpoint ids and
    block bytes kept as they are); returns the plans copied, none if anything failed."""
    if not plans:
        return []
    try:
        with open_store(src, "r") as store:
            if store.commit != commit:
                return []  # the file moved on since it was scanned
            store.export([p.out.session_id for p in plans], dst)
    except MemsegError:
        # Damage the scan could not see: fall back to recording these action by action.
        # A partial copy left uncommitted in dst is cut when dst is next opened to write.
        return []
    for p in plans:
        p.out.copied = True
    return plans


def _plan(session: Session | None, entry: TocEntry | None, item: _Found) -> _Plan:
    """Decide what to write for one session."""
    snap = item.snapshot[1] if item.snapshot else None
    sid = entry.session_id if entry else (snap.session_id if snap else (
        item.session[1].session_id if item.session else item.blocks[0].session_id))
    preferred = _committed_blocks(session) if session is not None else set()
    known = max(entry.action_count if entry else 0, snap.action_count if snap else 0)
    chosen, lost = _chain(item.blocks, preferred, known)
    source = "committed" if entry is not None else "uncommitted"
    if entry is not None and any(b.offset > entry.snapshot_offset for b in chosen):
        source = "committed+uncommitted"
    if entry is not None:
        name: str | None = entry.name
        meta_bytes = entry.meta
    elif item.session is not None:
        name, meta_bytes = item.session[1].name, item.session[1].meta
    else:
        name, meta_bytes = None, b""
    notes: list[str] = []
    try:
        meta = json_object(meta_bytes, 0)
    except MemsegError:
        meta, notes = {}, ["metadata unreadable"]
    if entry is None and item.session is None:
        notes.append("SESSION record lost: name and metadata unknown")
    kinds = snap.kinds if snap else ()
    if session is not None:
        try:
            committed_kinds = session.actions.kinds
        except MemsegError:
            committed_kinds = ()
        # Kind dictionaries only grow: a later snapshot's extends the committed one. One
        # that does not (a stale copy, or a count forged to look newer) loses to it.
        if kinds[: len(committed_kinds)] != committed_kinds:
            kinds = committed_kinds
    # The state of whatever was written last about the session: the TOC entry (which
    # alone records archiving) unless a newer snapshot or block follows it.
    state, status = State.ACTIVE, None
    newest = item.snapshot[0] if item.snapshot else -1
    last_block = max((b.offset for b in chosen), default=-1)
    if entry is not None and newest <= entry.snapshot_offset and last_block < entry.snapshot_offset:
        state, status = entry.state, entry.status
    elif snap is not None and last_block < newest:
        state, status = snap.state, snap.status
    known_ck = max(entry.checkpoint_count if entry else 0, snap.checkpoint_count if snap else 0)
    out = SessionSalvage(sid, name, state.name.lower(), source, lost=lost,
                         damaged_blocks=item.damaged_blocks, notes=notes)
    out.lost_checkpoints = max(0, known_ck - sum(b.checkpoint_count for b in chosen
                                                 if b.checkpoints_ok))
    # Readers never decode SESSION records, so a reader reading the session whole says
    # nothing of its own: copied as stored, a damaged one would fail verify in the copy.
    own_record = (entry is not None and item.session is not None
                  and item.session[0] == entry.session_offset)
    return _Plan(out, meta, kinds, chosen, state, status, entry, frozenset(preferred),
                 own_record and session is not None and _reads_cleanly(session))


def _reads_cleanly(session: Session) -> bool:
    """Whether every action and checkpoint of the session reads without an error. Intact
    records can still disagree (a kind code past the dictionary, a value that does not
    decode): such a session is rebuilt action by action, never copied as stored."""
    try:
        for action in session.actions:
            action.value()
            action.result_value()
        for checkpoint in session.checkpoints:
            checkpoint.value()
    except MemsegError:
        return False
    return True
