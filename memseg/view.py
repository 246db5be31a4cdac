"""Reading a committed state: sessions, their actions and checkpoints.

A ``View`` is immutable: the mapped bytes plus the TOC of one commit. Session
objects keep their View (and so the map) alive, so arrays handed out stay
valid after the store is refreshed or closed.
"""

from __future__ import annotations

import operator
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import overload

import numpy as np
import numpy.typing as npt

from memseg.blocks import BlockView, kind_names
from memseg.codec import json_object
from memseg.container import Commit, FileHeader, Located, Reader, locate_commit
from memseg.errors import CorruptError
from memseg.format import BLOCK_REF, FILE_HEADER, Kind
from memseg.framing import parse_header, read_record
from memseg.model import Action, Checkpoint, SessionInfo, SessionState
from memseg.records import BlockRefs, Snapshot, decode_index, decode_snapshot
from memseg.toc import DecodedTocs, TocEntry, TocState, load_toc

_BLOCK_CACHE = 8


def session_info(e: TocEntry) -> SessionInfo:
    """The public view of a TOC entry."""
    # Positional: listing builds one per session, and keywords cost more.
    return SessionInfo(
        e.session_id, e.name, SessionState.from_code(e.state), json_object(e.meta, e.session_offset),
        e.created_ns, e.ended_ns, e.last_activity_ns, e.status, e.action_count,
        e.checkpoint_count, e.stored_bytes,
    )


NameIndex = Mapping[str, list[TocEntry]]


def key_list(keys: uuid.UUID | str | Iterable[uuid.UUID | str]) -> list[uuid.UUID | str]:
    """One session key, or several, as a list: a str is one key, not its letters."""
    return [keys] if isinstance(keys, uuid.UUID | str) else list(keys)


def name_index(entries: Mapping[uuid.UUID, TocEntry]) -> dict[str, list[TocEntry]]:
    """The entries by name, so that looking up many names costs one pass, not one each."""
    index: dict[str, list[TocEntry]] = {}
    for e in entries.values():
        if e.name is not None:
            index.setdefault(e.name, []).append(e)
    return index


def find_entry(entries: Mapping[uuid.UUID, TocEntry], key: object,
               names: NameIndex | None = None) -> TocEntry:
    """Resolve a UUID, a UUID string or a unique session name; KeyError if none.

    ``names`` (`name_index` of ``entries``) saves a pass over the entries per name."""
    if isinstance(key, uuid.UUID):
        found = entries.get(key)
        if found is None:
            raise KeyError(key)
        return found
    if not isinstance(key, str):
        raise TypeError(f"session key must be a UUID or str, not {type(key).__name__}")
    try:
        by_id = entries.get(uuid.UUID(key))
    except ValueError:
        by_id = None
    if by_id is not None:
        return by_id
    named = names.get(key, []) if names is not None else [
        e for e in entries.values() if e.name == key]
    if len(named) > 1:
        raise KeyError(f"{len(named)} sessions are named {key!r}; use the id")
    if not named:
        raise KeyError(key)
    return named[0]


@dataclass(frozen=True, slots=True)
class View:
    """The bytes and table of contents of one commit."""

    buf: bytes | memoryview
    header: FileHeader
    commit: Commit | None
    entries: Mapping[uuid.UUID, TocEntry]
    limit: int
    # Built by the first lookup by name: a view's entries never change.
    _names: dict[str, list[TocEntry]] | None = field(default=None, compare=False, repr=False)

    def infos(self) -> list[SessionInfo]:
        ordered = sorted(self.entries.values(), key=lambda e: (e.created_ns, e.session_offset))
        return [session_info(e) for e in ordered]

    def find(self, key: object) -> TocEntry:
        """The entry ``key`` names (see `find_entry`)."""
        if self._names is None and isinstance(key, str):
            try:
                uuid.UUID(key)
            except ValueError:  # a name: index them all once
                object.__setattr__(self, "_names", name_index(self.entries))
        return find_entry(self.entries, key, self._names)

    def session(self, key: object) -> Session:
        return Session(self, self.find(key))


def _index_chunks(view: View, entry: TocEntry, snap: Snapshot) -> list[BlockRefs]:
    """Walk the session's INDEX chain back to its first chunk; oldest chunk first."""
    tag = view.header.tag
    chunks: list[BlockRefs] = []
    covered = 0
    offset, limit = snap.index_offset, entry.snapshot_offset
    while offset:
        _, payload = read_record(view.buf, offset, limit, tag, Kind.INDEX)
        sid, refs, prev = decode_index(payload, offset)
        covered += len(refs)
        if sid != entry.session_id or covered > snap.index_block_count:
            raise CorruptError("index_mismatch", "index chunk's session or block count",
                               offset=offset, expected=snap.index_block_count, actual=covered)
        chunks.append(refs)
        offset, limit = prev, offset  # prev < offset, so the walk ends
    if covered != snap.index_block_count:
        raise CorruptError("index_mismatch", "index chain holds too few blocks",
                           offset=snap.index_offset, expected=snap.index_block_count, actual=covered)
    chunks.reverse()
    return chunks


def _recent_blocks(view: View, entry: TocEntry, snap: Snapshot, indexed_last: int) -> BlockRefs:
    """Blocks written since the last INDEX chunk, found by walking the block chain back."""
    # Filled as the chain is walked, never sized from recent_count up front: that
    # count is read from the file, and a damaged one must fail the walk, not allocate.
    found: list[tuple[int, int, int]] = []
    offset = snap.last_block_offset
    for _ in range(snap.recent_count):
        if offset <= entry.session_offset:  # 0 included: the chain ended too soon
            raise CorruptError("bad_reference", "block chain ends before the snapshot's "
                               "recent blocks", offset=entry.snapshot_offset,
                               expected=f"> {entry.session_offset}", actual=offset)
        head = parse_header(view.buf, offset, entry.snapshot_offset, view.header.tag)
        if head.kind != Kind.BLOCK:
            raise CorruptError("wrong_kind", "block chain", offset=offset, expected="BLOCK",
                               actual=head.kind)
        block = BlockView(view.buf, head)
        if block.session_id != entry.session_id:
            raise CorruptError("wrong_session", "block chain leads to another session's block",
                               offset=offset)
        found.append((offset, block.count, block.checkpoint_count))
        offset = block.prev_block
    if snap.recent_count and offset != indexed_last:
        raise CorruptError("bad_reference", "block chain does not meet the index",
                           offset=snap.last_block_offset, expected=indexed_last, actual=offset)
    found.reverse()
    return np.array(found, dtype=BLOCK_REF)


def read_snapshot(view: View, entry: TocEntry) -> Snapshot:
    """The session's latest snapshot (counts, kind dictionary, where its blocks are)."""
    _, payload = read_record(view.buf, entry.snapshot_offset, view.limit, view.header.tag,
                             Kind.SNAPSHOT)
    snap = decode_snapshot(payload, entry.snapshot_offset)
    if snap.session_id != entry.session_id:
        raise CorruptError("wrong_session", "snapshot belongs to another session",
                           offset=entry.snapshot_offset)
    return snap


def locate_view(
    read: Reader, buf: memoryview, size: int, header: FileHeader,
    decoded: DecodedTocs | None = None,
) -> tuple[View, Located, TocState]:
    """Find the newest intact commit of a mapped file and build its View, with the TOC
    state read for it (a writer goes on from that state; a reader passes ``decoded``)."""
    tag = header.tag
    states: dict[int, TocState] = {}

    def check(commit: Commit) -> None:
        states[commit.trailer_offset] = load_toc(buf, commit.toc_offset, commit.trailer_offset,
                                                 tag, decoded)

    located = locate_commit(read, size, tag, check)
    commit = located.commit
    if commit is None:
        head = min(size, FILE_HEADER.size)
        return View(buf[:head], header, None, {}, head), located, TocState({}, [])
    state = states[commit.trailer_offset]
    return View(buf[: commit.end], header, commit, state.entries, commit.end), located, state


def load_block_refs(view: View, entry: TocEntry) -> tuple[Snapshot, BlockRefs]:
    """The session's snapshot and the references to all its blocks, checked."""
    snap = read_snapshot(view, entry)
    return snap, block_refs(view, entry, snap)


def block_refs(view: View, entry: TocEntry, snap: Snapshot) -> BlockRefs:
    """References to all the session's blocks, checked against its snapshot."""
    chunks = _index_chunks(view, entry, snap)
    indexed_last = int(chunks[-1]["offset"][-1]) if chunks and len(chunks[-1]) else 0
    chunks.append(_recent_blocks(view, entry, snap, indexed_last))
    refs = np.concatenate(chunks).astype(BLOCK_REF) if len(chunks) > 1 else chunks[0]
    actions = int(refs["actions"].sum(dtype=np.uint64))
    ckpts = int(refs["checkpoints"].sum(dtype=np.uint64))
    if actions != snap.action_count or ckpts != snap.checkpoint_count:
        raise CorruptError("count_mismatch", "block counts do not add up to the snapshot's",
                           offset=entry.snapshot_offset,
                           expected=(snap.action_count, snap.checkpoint_count),
                           actual=(actions, ckpts))
    offsets = refs["offset"]
    if len(offsets) and (np.any(np.diff(offsets.astype(np.int64)) <= 0)
                         or int(offsets[-1]) >= entry.snapshot_offset):
        raise CorruptError("bad_reference", "block offsets must increase and precede the snapshot",
                           offset=entry.snapshot_offset)
    # Read-only: a session keeps these and checks each block it reads against them,
    # so a caller writing to them would make a healthy file read as corrupt.
    refs.flags.writeable = False
    return refs


class Session:
    """One session of a View: its info, actions and checkpoints."""

    def __init__(self, view: View, entry: TocEntry) -> None:
        self._view = view
        self.entry = entry
        self.info = session_info(entry)
        self._actions: Actions | None = None

    @property
    def actions(self) -> Actions:
        """The session's actions, read lazily block by block."""
        if self._actions is None:
            self._actions = Actions(self._view, self.entry, read_snapshot(self._view, self.entry))
        return self._actions

    def kind_counts(self) -> dict[str, int]:
        """Actions per kind, from the session's snapshot alone (no block is read)."""
        return self.actions.kind_counts()

    @property
    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, oldest first (reads only blocks that hold one)."""
        actions = self.actions
        out: list[Checkpoint] = []
        for i in np.flatnonzero(actions.refs["checkpoints"]):
            out += actions.block(int(i)).checkpoints()
        return out


class Actions:
    """The actions of a session, indexable like a list, with columns as arrays."""

    def __init__(self, view: View, entry: TocEntry, snap: Snapshot) -> None:
        self._view = view
        self._entry = entry
        self._snap = snap
        self.kinds: tuple[str, ...] = snap.kinds
        self._kind_array: npt.NDArray[np.object_] | None = None
        self._kind_counts = snap.kind_counts
        self._refs: BlockRefs | None = None
        self._starts_array: npt.NDArray[np.int64] | None = None
        self._cache: OrderedDict[int, BlockView] = OrderedDict()

    @property
    def refs(self) -> BlockRefs:
        """Where each block of the session is (read on first use, then kept; read-only)."""
        if self._refs is None:
            self._refs = block_refs(self._view, self._entry, self._snap)
        return self._refs

    @property
    def _starts(self) -> npt.NDArray[np.int64]:
        if self._starts_array is None:
            counts = self.refs["actions"].astype(np.int64)
            self._starts_array = np.concatenate([[0], np.cumsum(counts)])
        return self._starts_array

    def __len__(self) -> int:
        return self._snap.action_count

    def block(self, index: int) -> BlockView:
        """The ``index``-th block of the session (negative counts from the end), validated
        against its reference."""
        count = len(self.refs)
        index = operator.index(index)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError(f"block index out of range ({count} blocks)")
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        ref = self.refs[index]
        offset = int(ref["offset"])
        head = parse_header(self._view.buf, offset, self._entry.snapshot_offset,
                            self._view.header.tag)
        if head.kind != Kind.BLOCK:
            raise CorruptError("wrong_kind", "block reference", offset=offset,
                               expected="BLOCK", actual=head.kind)
        block = BlockView(self._view.buf, head)
        if (block.session_id != self._entry.session_id
                or block.first_seq != int(self._starts[index])
                or block.count != int(ref["actions"])
                or block.checkpoint_count != int(ref["checkpoints"])):
            raise CorruptError("block_mismatch", "block does not match its reference",
                               offset=offset)
        if block.count and int(block.kinds.max()) >= len(self.kinds):
            raise CorruptError("block_layout", "kind code outside the dictionary", offset=offset)
        self._cache[index] = block
        if len(self._cache) > _BLOCK_CACHE:
            self._cache.popitem(last=False)
        return block

    def _range(self, start: int, stop: int) -> list[Action]:
        out: list[Action] = []
        if start >= stop:
            return out
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        last = int(np.searchsorted(self._starts, stop - 1, side="right")) - 1
        for b in range(first, last + 1):
            block = self.block(b)
            base = int(self._starts[b])
            lo, hi = max(start, base) - base, min(stop, base + block.count) - base
            out += block.actions(lo, hi, self._names)
        return out

    @property
    def _names(self) -> npt.NDArray[np.object_]:
        """The kind names as an object array, made once: reading actions takes from it."""
        if self._kind_array is None:
            self._kind_array = kind_names(self.kinds)
        return self._kind_array

    @overload
    def __getitem__(self, key: int) -> Action: ...
    @overload
    def __getitem__(self, key: slice) -> list[Action]: ...
    def __getitem__(self, key: int | slice) -> Action | list[Action]:
        n = len(self)
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return self._range(start, stop)
            return [self[i] for i in range(start, stop, step)]
        index = operator.index(key)  # as a list: TypeError for 1.0 or "1"
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"action {key} out of range for {n} actions")
        return self._range(index, index + 1)[0]

    def __iter__(self) -> Iterator[Action]:
        for b in range(len(self.refs)):
            block = self.block(b)
            yield from block.actions(0, block.count, self._names)

    def _column(self, name: str) -> npt.NDArray[np.generic]:
        parts = [getattr(self.block(b), name) for b in range(len(self.refs))]
        if len(parts) == 1:
            return parts[0]  # type: ignore[no-any-return]
        if not parts:
            return np.empty(0, dtype=np.int64 if name == "ts" else np.uint16)
        return np.concatenate(parts)

    @property
    def ts_ns(self) -> npt.NDArray[np.int64]:
        """Timestamps (viewed in place when the session is a single block)."""
        return self._column("ts")  # type: ignore[return-value]

    @property
    def kind_codes(self) -> npt.NDArray[np.uint16]:
        """Kind codes; ``kinds[code]`` is the name."""
        return self._column("kinds")  # type: ignore[return-value]

    @property
    def seq(self) -> npt.NDArray[np.int64]:
        """Sequence numbers: dense from 0."""
        # Sized by the blocks, checked against the snapshot, not by the snapshot's
        # count alone: a damaged count must fail, not allocate.
        return np.arange(int(self._starts[-1]), dtype=np.int64)

    def kind_counts(self) -> dict[str, int]:
        """Actions per kind, from the snapshot (no block is read)."""
        return {k: c for k, c in zip(self.kinds, self._kind_counts, strict=True) if c}
