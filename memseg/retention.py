"""Retention: archiving sessions, exporting them to another file, and the sweep.

Archiving is a TOC-only change: the entry's state becomes ARCHIVED while the
session's records, and its last snapshot (which says ENDED), stay as they are,
readable until a compaction drops them. Export copies a session's stored
records into another memseg file (transfer.py). The sweep combines the two on
a schedule, and can hold the archive file under a byte cap by dropping its
oldest sessions and compacting it (SPEC.md "Archive and compaction").
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from memseg.compactor import compact_store, refuse_kept_commit
from memseg.container import kept_tail_start, refuse_damaged_commits
from memseg.errors import CorruptError, MemsegError, StateError
from memseg.format import FILE_HEADER, MAGIC, TOC_HEADER, TRAILER_RECORD_SIZE, State, record_size
from memseg.toc import TocEntry, entry_size, fits_one_record, uncompressed_toc_size
from memseg.transfer import CountingSink, copy_session, plan_session
from memseg.view import View, find_entry, key_list, name_index

if TYPE_CHECKING:
    from memseg.store import PathLike, Store

SessionKeys = uuid.UUID | str | Iterable[uuid.UUID | str]
_DAY_NS = 86_400 * 1_000_000_000
_I64_MIN = -(2**63)


@dataclass(frozen=True, slots=True)
class SweepItem:
    """One session a sweep acted on, and the bytes that action concerns."""

    id: uuid.UUID
    name: str | None
    last_activity_ns: int
    bytes: int


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What a sweep did or, with ``dry_run``, would do: sessions and bytes per action.

    ``archived``: bytes each session holds in this store (what its next
    compaction frees). ``exported``: bytes appended to the archive file for it.
    ``dropped``: bytes it held in the compacted archive file. ``still_active``:
    sessions past the cutoff that are still active (their writer died or never
    ended them); they are never archived. ``archive_bytes_after`` is known
    when the sweep compacted the archive file or left it alone, else None.
    """

    dry_run: bool
    cutoff_ns: int
    archived: tuple[SweepItem, ...]
    exported: tuple[SweepItem, ...]
    dropped: tuple[SweepItem, ...]
    still_active: tuple[SweepItem, ...]
    archive_bytes_before: int | None
    archive_bytes_after: int | None

    @property
    def archived_bytes(self) -> int:
        return sum(i.bytes for i in self.archived)

    @property
    def exported_bytes(self) -> int:
        return sum(i.bytes for i in self.exported)

    @property
    def dropped_bytes(self) -> int:
        return sum(i.bytes for i in self.dropped)


def _resolve(entries: Mapping[uuid.UUID, TocEntry], keys: SessionKeys) -> list[TocEntry]:
    """The entries ``keys`` name, once each, in file order."""
    listed = key_list(keys)
    names = name_index(entries) if len(listed) > 1 else None
    found = {e.session_id: e for e in (find_entry(entries, k, names) for k in listed)}
    return sorted(found.values(), key=lambda e: e.session_offset)


def _set_state(store: Store, keys: SessionKeys, old: State, new: State) -> int:
    def change(entries: Mapping[uuid.UUID, TocEntry]) -> list[TocEntry]:
        chosen = _resolve(entries, keys)
        active = [e for e in chosen if e.state == State.ACTIVE]
        if new == State.ARCHIVED and active:
            raise StateError(
                "active", f"session {active[0].session_id} is still active (recording, or its "
                "writer died): end it, or resume() and end() it, before archiving",
                expected="ended", actual="active")
        return [dataclasses.replace(e, state=new) for e in chosen if e.state == old]

    return store._commit_entries(change)


def archive(store: Store, keys: SessionKeys) -> int:
    """Mark ended sessions archived; returns how many changed (archived ones are skipped).

    Refused with StateError("active") if any of them is active; nothing changes then.
    """
    return _set_state(store, keys, State.ENDED, State.ARCHIVED)


def _archive_still_ended(store: Store, ids: set[uuid.UUID]) -> int:
    """Archive those of ``ids`` that are still ended: another thread may have archived,
    compacted away or resumed one while the sweep exported."""
    def change(entries: Mapping[uuid.UUID, TocEntry]) -> list[TocEntry]:
        return [dataclasses.replace(e, state=State.ARCHIVED) for i, e in entries.items()
                if i in ids and e.state == State.ENDED]

    return store._commit_entries(change)


def unarchive(store: Store, keys: SessionKeys) -> int:
    """Bring archived sessions back to ended; returns how many changed."""
    return _set_state(store, keys, State.ARCHIVED, State.ENDED)


def _exported_state(state: State) -> State:
    # A copy is live in its new file: an archived session arrives ended.
    return State.ENDED if state == State.ARCHIVED else state


def _same(a: TocEntry, b: TocEntry) -> bool:
    """Whether two entries describe the same recorded session (offsets and sizes aside)."""
    def key(e: TocEntry) -> tuple[object, ...]:
        return (e.created_ns, e.last_activity_ns, e.ended_ns, e.action_count, e.checkpoint_count,
                e.name, e.status, e.meta, _exported_state(e.state))
    return key(a) == key(b)


def _to_export(present: Mapping[uuid.UUID, TocEntry], entries: Sequence[TocEntry],
               dest: str) -> list[TocEntry]:
    """The entries not in the destination yet; an earlier copy of one is skipped."""
    out: list[TocEntry] = []
    for e in entries:
        there = present.get(e.session_id)
        if there is None:
            out.append(e)
        elif not _same(there, e):
            raise StateError("exists", f"{dest} already holds a different session "
                             f"{e.session_id}", expected=e.action_count, actual=there.action_count)
    return out


def _copy_size(view: View, entry: TocEntry, *, merge: bool) -> int:
    """Bytes the session's copy takes (exact: copies are position-independent in size)."""
    return copy_session(view, plan_session(view, entry, merge=merge), CountingSink(),
                        view.header.tag).bytes


class _StoreSink:
    """Appends to a writable store (the caller holds its mutex)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def append(self, record: bytes | memoryview) -> int:
        return self._store._append(record)


def _export_into(dest: Store, view: View, entries: Sequence[TocEntry]) -> list[tuple[TocEntry, int]]:
    """Copy ``entries`` from ``view`` into ``dest`` in one commit; returns (entry, bytes) copied."""
    with dest._mutex:
        dest._check_writable()
        todo = _to_export(dest._toc.entries, entries, dest.path)
        sink = _StoreSink(dest)
        with dest._appends_undone_on(MemsegError):  # a damaged source leaves dest as it was
            copies = [(e, copy_session(view, plan_session(view, e, merge=False), sink, dest._tag,
                                       state=_exported_state(e.state))) for e in todo]
    if copies:
        dest._commit_entries(lambda _: [c.entry for _, c in copies])
    return [(e, c.bytes) for e, c in copies]


@contextlib.contextmanager
def _destination(store: Store, dest: str, lock_timeout: float) -> Iterator[Store]:
    """``dest`` open for writing; if the block fails on damage (a MemsegError) and this
    call created ``dest`` (and nothing was committed to it since), it is removed, while
    still locked, so that a failed copy leaves no file behind. A file that was there
    before stays, even one holding nothing but its header."""
    from memseg.store import Store

    with Store(dest, "a", sync=store.sync, fs=store._fs, lock_timeout=lock_timeout) as d:
        empty = d.created_file and d.commit is None and d._end == FILE_HEADER.size
        try:
            yield d
        except MemsegError:
            if empty and d.commit is None:
                store._fs.remove(d.path)  # the file it made, not a symlink naming it
            raise


def _check_distinct(store: Store, dest: str) -> None:
    here = store._fs.identity(store.path)
    if here is not None and here == store._fs.identity(dest):
        raise ValueError("the destination is the store's own file")


def export(store: Store, keys: SessionKeys, dest_path: PathLike, *, lock_timeout: float = 0.0) -> int:
    """Copy sessions into the memseg file ``dest_path`` (created if missing); returns how many."""

    # Copy only what is committed here, never what another thread has only staged.
    view = store._committed_view() if store.mode == "a" else store._current()
    entries = _resolve(view.entries, keys)
    dest = os.fspath(dest_path)
    _check_distinct(store, dest)
    with _destination(store, dest, lock_timeout) as d:
        return len(_export_into(d, view, entries))


# --- the sweep ------------------------------------------------------------


def _age(e: TocEntry) -> tuple[int, int, bytes]:
    return e.last_activity_ns, e.created_ns, e.session_id.bytes


def _item(e: TocEntry, size: int) -> SweepItem:
    return SweepItem(e.session_id, e.name, e.last_activity_ns, size)


def _fit(sized: Sequence[tuple[TocEntry, int]], cap: int) -> tuple[tuple[SweepItem, ...], int]:
    """The oldest ended sessions to drop so the compacted file fits ``cap``, and its size then.

    A compacted file is the header, each kept session's records, its uncompressed TOC
    records and the trailer: every size is known exactly.
    """
    sessions = sum(size for _, size in sized)
    toc = sum(entry_size(e) for e, _ in sized)
    candidates = sorted((p for p in sized if p[0].state == State.ENDED), key=lambda p: _age(p[0]))
    if not fits_one_record(toc):
        return _fit_large_toc(sized, candidates, cap)

    def total() -> int:
        # One TOC record: its entries fit one record's budget, and dropping only shrinks it.
        return FILE_HEADER.size + sessions + record_size(TOC_HEADER.size + toc) + TRAILER_RECORD_SIZE

    dropped: list[SweepItem] = []
    for e, size in candidates:
        if total() <= cap:
            break
        sessions -= size
        toc -= entry_size(e)
        dropped.append(_item(e, size))
    return tuple(dropped), total()


def _fit_large_toc(sized: Sequence[tuple[TocEntry, int]],
                   candidates: Sequence[tuple[TocEntry, int]],
                   cap: int) -> tuple[tuple[SweepItem, ...], int]:
    """``_fit`` for a TOC split across records: the split moves as sessions are dropped,
    so each size is computed whole (O(n)), and the number to drop is bisected."""
    in_toc_order = sorted(sized, key=lambda p: p[0].session_id.bytes)

    def total(k: int) -> int:
        gone = {e.session_id for e, _ in candidates[:k]}
        kept = [(e, size) for e, size in in_toc_order if e.session_id not in gone]
        return (FILE_HEADER.size + sum(size for _, size in kept)
                + uncompressed_toc_size([entry_size(e) for e, _ in kept]) + TRAILER_RECORD_SIZE)

    lo, hi = 0, len(candidates)
    if total(hi) <= cap:
        while lo < hi:  # the fewest drops that fit
            mid = (lo + hi) // 2
            if total(mid) <= cap:
                hi = mid
            else:
                lo = mid + 1
    return tuple(_item(e, size) for e, size in candidates[:hi]), total(hi)


def _archive_size(store: Store, path: str) -> tuple[int, Store | None]:
    """The archive file's committed size (0 if missing or new) and a reader on it, if any."""
    from memseg.store import Store

    fs = store._fs
    if not fs.exists(path):
        return 0, None
    fh = fs.open(path, write=False, create=False)
    try:
        size = fh.size()
        head = fh.read(0, min(size, FILE_HEADER.size))
    finally:
        fh.close()
    if size < FILE_HEADER.size and head[: len(MAGIC)] == MAGIC[:size]:
        return 0, None  # a writer's open treats it as new
    reader = Store(path, "r", fs=fs)
    commit = reader.commit
    return (commit.end if commit else FILE_HEADER.size), reader


def _refuse_as_a_writer_would(reader: Store) -> None:
    """The dry run's kept_commit: a writer opening the archive file would keep bytes for
    salvage there, and the real run's compaction would then refuse."""
    located = reader.located
    # The size the reader's snapshot was taken at: the file may have grown since.
    size = (located.commit.end if located.commit else FILE_HEADER.size) + located.tail_bytes
    fh = reader._fs.open(reader.path, write=False, create=False)
    try:
        kept = kept_tail_start(fh.read, located, size, reader._current().header.tag)
    finally:
        fh.close()
    if kept is not None:
        raise CorruptError("kept_commit", "the archive file holds an unverified or damaged "
                           "commit; compacting it would drop it: salvage it first", offset=kept)


def _live_sizes(view: View) -> list[tuple[TocEntry, int]]:
    return [(e, _copy_size(view, e, merge=True)) for e in view.entries.values()
            if e.state != State.ARCHIVED]


Planned = tuple[tuple[SweepItem, ...], tuple[SweepItem, ...], int | None, int | None]


def _plan_archive(store: Store, view: View, due: Sequence[TocEntry], dest: str,
                  cap: int | None) -> Planned:
    """What archiving ``due`` into ``dest`` would do, computed without changing anything."""
    before, reader = _archive_size(store, dest)
    try:
        if reader is not None and (due or (cap is not None and before > cap)):
            refuse_damaged_commits(reader.located)  # as the real run's writer will
        dview = reader._current() if reader is not None else None
        todo = _to_export(dview.entries if dview else {}, due, dest)
        exported = tuple(_item(e, _copy_size(view, e, merge=False)) for e in todo)
        if cap is None:  # appended to, or (nothing due) left alone
            return exported, (), before, None if todo else before
        if not todo and before <= cap:
            return exported, (), before, before
        if reader is not None:
            _refuse_as_a_writer_would(reader)
        sized = _live_sizes(dview) if dview else []
        sized += [(dataclasses.replace(e, state=_exported_state(e.state)),
                   _copy_size(view, e, merge=True)) for e in todo]
        dropped, after = _fit(sized, cap)
        return exported, dropped, before, after
    finally:
        if reader is not None:
            reader.close()


def _run_archive(store: Store, view: View, due: Sequence[TocEntry], dest: str,
                 cap: int | None, lock_timeout: float) -> Planned:
    """Export ``due`` into ``dest``; with a cap, drop its oldest sessions and compact it."""

    before, reader = _archive_size(store, dest)
    if reader is not None:
        reader.close()
    if not due and (cap is None or before <= cap):
        return (), (), before, before  # left alone
    with _destination(store, dest, lock_timeout) as d:
        if cap is not None and (_to_export(d._toc.entries, due, dest) or before > cap):
            refuse_kept_commit(d)  # the compaction below would refuse after the export
        exported = tuple(_item(e, size) for e, size in _export_into(d, view, due))
        if cap is None:
            return exported, (), before, None if exported else before
        if not exported and before <= cap:
            return exported, (), before, before
        dropped, _ = _fit(_live_sizes(d._current()), cap)
        if dropped:
            archive(d, [i.id for i in dropped])
        return exported, dropped, before, compact_store(d).bytes_after


def sweep(store: Store, inactive_days: float, *, archive_to: PathLike | None = None,
          max_archive_bytes: int | None = None, dry_run: bool = False,
          now_ns: int | None = None, lock_timeout: float = 0.0) -> SweepReport:
    """Archive every ended session inactive for longer than ``inactive_days``.

    With ``archive_to`` they are first exported to that memseg file; with
    ``max_archive_bytes`` that file then loses its oldest sessions until its
    compacted size fits, and is compacted (whenever the sweep exported
    something or it is over the cap). ``dry_run`` changes nothing and reports
    exactly what a real run would do. ``now_ns`` fixes the clock.
    """
    if not inactive_days >= 0:  # refuses NaN too
        raise ValueError("inactive_days must be a number >= 0")
    if max_archive_bytes is not None and (archive_to is None or max_archive_bytes < 0):
        raise ValueError("max_archive_bytes needs archive_to and must be >= 0")
    if not dry_run:
        store._check_writable()
    view = store._current() if dry_run else store._committed_view()
    now = time.time_ns() if now_ns is None else int(now_ns)
    span = inactive_days * _DAY_NS
    # Times are i64: a span past that range (up to infinity) makes nothing old enough.
    cutoff = max(_I64_MIN, now - round(span)) if span < 2**64 else _I64_MIN
    stale = sorted((e for e in view.entries.values()
                    if e.state != State.ARCHIVED and e.last_activity_ns < cutoff), key=_age)
    due = [e for e in stale if e.state == State.ENDED]
    planned: Planned = ((), (), None, None)
    if archive_to is not None:
        dest = os.fspath(archive_to)
        _check_distinct(store, dest)
        if dry_run:
            planned = _plan_archive(store, view, due, dest, max_archive_bytes)
        else:
            planned = _run_archive(store, view, due, dest, max_archive_bytes, lock_timeout)
    if due and not dry_run:
        _archive_still_ended(store, {e.session_id for e in due})
    exported, dropped, before, after = planned
    return SweepReport(
        dry_run, cutoff, tuple(_item(e, e.stored_bytes) for e in due), exported, dropped,
        tuple(_item(e, e.stored_bytes) for e in stale if e.state == State.ACTIVE), before, after,
    )

