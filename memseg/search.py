"""Find actions whose payload (or result) matches a substring or regular expression.

Each block's blob (every payload, then every result, back to back) is
decompressed once and searched with one compiled regex; a match position is
mapped back to its action through the block's payload end offsets, so no action
is decoded unless it matches. A pattern that looks beyond the bytes it matches
(anchors, lookaround, ...) is instead run on each action's bytes alone, so every
pattern matches as ``re.search`` does on each payload (or result) by itself.
Blocks whose kind codes cannot match are skipped before they are decompressed.
"""

from __future__ import annotations

import bisect
import functools
import importlib
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from memseg.blocks import BlockView
from memseg.errors import MemsegError
from memseg.forensics import Rescued, open_readonly
from memseg.format import RESULT_SHIFT, VALUE_MASK, ValueType
from memseg.scan import Progress
from memseg.store import Store
from memseg.view import Session, key_list

_CONTEXT = 40
OnError = Callable[[MemsegError], None]


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One matching action: where it is, and the matched bytes with some context."""

    session_id: uuid.UUID
    session_name: str | None
    seq: int
    kind: str
    ts_ns: int
    # "payload" or "result".
    part: str
    # The match, as offsets into the action's payload (or result).
    start: int
    end: int
    # The matched bytes with up to 40 bytes either side, and where the match starts in it.
    context: bytes
    context_start: int


def compile_pattern(pattern: str | bytes, *, regex: bool = False,
                    ignore_case: bool = False) -> re.Pattern[bytes]:
    """The bytes regex for ``pattern`` (a literal substring unless ``regex``; a str stands
    for its UTF-8 bytes); TypeError for another type, re.error if invalid."""
    if isinstance(pattern, str):
        try:
            raw = pattern.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise TypeError(f"pattern is not valid UTF-8 ({exc.reason}); give bytes to match "
                            "bytes that are not text") from None
    elif isinstance(pattern, bytes | bytearray | memoryview):
        raw = bytes(pattern)
    else:
        raise TypeError(f"pattern must be str or bytes, not {type(pattern).__name__}")
    return re.compile(raw if regex else re.escape(raw), re.IGNORECASE if ignore_case else 0)


# The parser CPython's re module compiles with; it has no public equivalent.
_parser = importlib.import_module("re._parser")
_BRANCH = _parser.BRANCH
_NESTING = frozenset({_parser.SUBPATTERN, _parser.MAX_REPEAT, _parser.MIN_REPEAT})

# Parse-tree nodes whose match at a position depends only on the bytes the match
# consumes: literals, character sets, any byte, alternation, groups, and greedy or
# lazy repeats. Everything else is refused, in particular anchors and word
# boundaries (AT), lookahead and lookbehind (ASSERT, ASSERT_NOT), possessive
# repeats and atomic groups (what they take depends on the bytes after them), and
# backreferences and conditionals (they depend on earlier captures).
_LOCAL_NODES = frozenset({_parser.LITERAL, _parser.NOT_LITERAL, _parser.ANY, _parser.IN,
                          _BRANCH, *_NESTING})
_REPEATS = frozenset({_parser.MAX_REPEAT, _parser.MIN_REPEAT})


@functools.lru_cache(maxsize=64)
def _local(pattern: bytes, flags: int) -> bool:
    """Whether searching a block's joined values finds what searching each value alone
    finds, at a cost like theirs: every match depends only on the bytes it consumes,
    and no repeat is unbounded. An unbounded one (``.*``, ``x+``) would let one attempt
    run on across every later value: ``.*zzz`` over a joined 64 KiB takes over a
    second, against milliseconds value by value, and backtracking nested repeats
    grow exponentially with the length they run over."""
    stack = [_parser.parse(pattern, flags)]
    while stack:
        for op, av in stack.pop():
            if op not in _LOCAL_NODES:
                return False
            if op in _REPEATS and av[1] == _parser.MAXREPEAT:
                return False
            if op is _BRANCH:
                stack += av[1]  # (None, [alternative, ...])
            elif op in _NESTING:
                stack.append(av[-1])  # the group's or repeated item's own sub-pattern
    return True


def _matches(rx: re.Pattern[bytes], blob: bytes, starts: list[int], ends: list[int],
             allowed: npt.NDArray[np.bool_] | None, codes: list[int]
             ) -> Iterator[tuple[int, int, int]]:
    """(action index, match start, match end) of the first match in each matching action."""
    if not ends:
        return
    if not _local(rx.pattern, rx.flags):
        # Searching the joined blob would let the pattern see a neighbour's bytes.
        mv = memoryview(blob)
        for i, (lo, hi) in enumerate(zip(starts, ends, strict=True)):
            if allowed is None or allowed[codes[i]]:
                m = rx.search(mv[lo:hi])
                if m is not None:
                    yield i, lo + m.start(), lo + m.end()
        return
    # For a pattern that only looks at the bytes it consumes, a match inside one
    # action is a match of the blob, and a match of the blob that lies inside one
    # action is a match of that action alone. So the leftmost match m of the blob
    # from the start of action i starts at or before the first match of any action
    # from i on: actions ending before m.start() hold none, and the first action
    # ending at or after it (an empty one at m.start() included) has its first
    # match at m.start() or later, found by searching its own bytes from there.
    stop, n = ends[-1], len(ends)
    i = 0
    m = rx.search(blob, starts[0], stop)
    while m is not None and i < n:
        i = bisect.bisect_left(ends, m.start(), i)  # < n: a match starts at or before stop
        hi = ends[i]
        first: re.Match[bytes] | None = m
        if m.end() > hi:
            # The match runs on into the next action: look again inside this one alone.
            first = rx.search(blob, m.start(), hi)
        if first is not None and (allowed is None or allowed[codes[i]]):
            yield i, first.start(), first.end()
        i += 1
        if i < n and starts[i] > m.start():
            # Searched again from the next action's start; while that start is at or
            # before m.start(), the search would find m again.
            m = rx.search(blob, starts[i], stop)


def search_session(session: Session, rx: re.Pattern[bytes], *, kinds: Iterable[str] | None = None,
                   results: bool = False, on_error: OnError | None = None) -> Iterator[SearchHit]:
    """Matches in one session, in seq order (payloads; results too if ``results``).

    A damaged block raises CorruptError, or, with ``on_error``, is reported to it and skipped;
    so is a session whose snapshot or block index cannot be read.
    """
    try:
        actions = session.actions
        names = actions.kinds
        refs = actions.refs
    except MemsegError as exc:
        if on_error is None:
            raise
        on_error(exc)  # nothing of this session can be searched; later sessions still are
        return
    allowed: npt.NDArray[np.bool_] | None = None
    if kinds is not None:
        wanted = set(kinds)
        allowed = np.array([k in wanted for k in names] + [False], dtype=bool)
        if not allowed.any():
            return
    info = session.info
    for b in range(len(refs)):
        try:
            block = actions.block(b)
            n = block.count
            if not n:
                continue
            codes_arr = np.minimum(block.kinds, len(names))
            if allowed is not None and not allowed[codes_arr].any():
                continue  # no action of a wanted kind: skip without decompressing
            blob = block.blob()
        except MemsegError as exc:
            if on_error is None:
                raise
            on_error(exc)  # a damaged block: its actions cannot be searched
            continue
        hits = _block_hits(block, blob, rx, allowed, codes_arr.tolist(), results)
        for part, i, m0, m1, lo, hi in sorted(hits, key=lambda h: (h[1], h[0] == "result")):
            c0, c1 = max(lo, m0 - _CONTEXT), min(hi, m1 + _CONTEXT)
            code = int(block.kinds[i])
            yield SearchHit(info.id, info.name, block.first_seq + i,
                            names[code] if code < len(names) else f"unknown-kind-{code}",
                            int(block.ts[i]), part, m0 - lo, m1 - lo, blob[c0:c1], m0 - c0)


def _block_hits(block: BlockView, blob: bytes, rx: re.Pattern[bytes], allowed: npt.NDArray[np.bool_] | None,
                codes: list[int], results: bool) -> list[tuple[str, int, int, int, int, int]]:
    n = block.count
    # End offsets of the payloads then of the results within the blob (BLOCK layout).
    ends: list[int] = block._ends.tolist()
    out: list[tuple[str, int, int, int, int, int]] = []
    p_ends = ends[:n]
    p_starts = [0, *p_ends[:-1]]
    for i, a, b in _matches(rx, blob, p_starts, p_ends, allowed, codes):
        out.append(("payload", i, a, b, p_starts[i], p_ends[i]))
    if results:
        r_ends = ends[n:]
        r_starts = [p_ends[-1], *r_ends[:-1]]
        flags = block.flags.tolist()
        for i, a, b in _matches(rx, blob, r_starts, r_ends, allowed, codes):
            if (flags[i] >> RESULT_SHIFT) & VALUE_MASK != ValueType.NONE:
                out.append(("result", i, a, b, r_starts[i], r_ends[i]))
    return out


def search(source: str | os.PathLike[str] | Store | Rescued, pattern: str | bytes, *,
           regex: bool = False, ignore_case: bool = False, kinds: str | Iterable[str] | None = None,
           sessions: str | uuid.UUID | Iterable[str | uuid.UUID] | None = None,
           results: bool = False, progress: Progress | None = None,
           on_error: OnError | None = None) -> Iterator[SearchHit]:
    """Matching actions across all sessions (or ``sessions``), oldest session first.

    Patterns match the stored bytes (UTF-8 for text and JSON), so ``ignore_case`` folds
    ASCII letters only ("É" does not match "é"). One kind or one session may be given
    alone, as for ``archive``. The arguments are checked by the call (TypeError,
    re.error); the file is read as the hits are taken. Damaged blocks raise
    CorruptError, or, with ``on_error``, are reported to it and skipped.
    """
    rx = compile_pattern(pattern, regex=regex, ignore_case=ignore_case)
    kind_list = None if kinds is None else [kinds] if isinstance(kinds, str) else list(kinds)
    if kind_list is not None and not all(isinstance(k, str) for k in kind_list):
        raise TypeError("kinds must be a str or an iterable of str")
    keys = None if sessions is None else key_list(sessions)
    if keys is not None and not all(isinstance(k, str | uuid.UUID) for k in keys):
        raise TypeError("sessions must be a UUID, a str, or an iterable of them")
    return _search(source, rx, kind_list, keys, results, progress, on_error)


def _search(source: str | os.PathLike[str] | Store | Rescued, rx: re.Pattern[bytes],
            kinds: list[str] | None, sessions: list[str | uuid.UUID] | None, results: bool,
            progress: Progress | None, on_error: OnError | None) -> Iterator[SearchHit]:
    if not isinstance(source, str | os.PathLike):
        yield from _search_store(source, rx, kinds, sessions, results, progress, on_error)
        return
    with open_readonly(source) as store:
        yield from _search_store(store, rx, kinds, sessions, results, progress, on_error)


def _search_store(store: Store | Rescued, rx: re.Pattern[bytes], kinds: list[str] | None,
                  sessions: list[str | uuid.UUID] | None, results: bool,
                  progress: Progress | None, on_error: OnError | None) -> Iterator[SearchHit]:
    infos = store.sessions()
    if sessions is not None:
        keys = {store.session(k).info.id for k in sessions}
        infos = [i for i in infos if i.id in keys]
    total = max(1, sum(i.stored_bytes for i in infos))
    done = 0
    for info in infos:
        if progress is not None:
            progress(done, total)
        yield from search_session(store.session(info.id), rx,
                                  kinds=kinds, results=results, on_error=on_error)
        done += info.stored_bytes
    if progress is not None:
        progress(total, total)
