"""Build real memseg files and damage them: the seed corpus and the hypothesis strategies.

Damage goes deeper than bit flips: a record's fields can be set to hostile
values (2**63, 2**32-1, offsets pointing backwards, at the record itself or at
a record of another kind, TOC runs that loop) and its CRCs recomputed, so the
structural checks behind the checksums get exercised, not only the checksums.

``python -m fuzz.corpus [DIR]`` rewrites the seed corpus (default fuzz/corpus/).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lz4.block
from hypothesis import strategies as st

import memseg
import memseg.codec
from memseg.codec import crc32c
from memseg.format import (
    BLOCK_COLUMNS_CRC_SPAN,
    BLOCK_HEADER,
    FILE_HEADER,
    RECORD_HEADER,
    RECORD_HEADER_CRC_SPAN,
    TOC_HEADER,
    Codec,
    Kind,
    padded,
)
from memseg.framing import RecordHeader

ROOT = Path(__file__).resolve().parent
HOSTILE = (0, 1, 7, 8, 63, 64, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1)

# --- building real files ---------------------------------------------------------


@dataclass(frozen=True)
class SessionSpec:
    """One session of a file to build: its flushes (lists of payloads) and how it ends."""

    name: str | None
    flushes: tuple[tuple[Any, ...], ...]
    checkpoint: bool
    end: str | None  # status to end with, or None to leave it active


@contextlib.contextmanager
def _uncompressed(enabled: bool) -> Iterator[None]:
    """Write every record uncompressed, so in-place field edits stay possible."""
    saved = memseg.codec.MIN_COMPRESS
    if enabled:
        memseg.codec.MIN_COMPRESS = 1 << 62
    try:
        yield
    finally:
        memseg.codec.MIN_COMPRESS = saved


def build_file(sessions: list[SessionSpec], *, raw: bool = True, reopen: bool = True) -> bytes:
    """Record ``sessions`` into a new file (closing and reopening halfway); return its bytes."""
    with tempfile.TemporaryDirectory() as tmp, _uncompressed(raw):
        path = os.path.join(tmp, "f.mseg")
        half = len(sessions) // 2 if reopen else len(sessions)
        for part in (sessions[:half], sessions[half:]):
            with memseg.open(path, "a", sync="none") as store:
                for i, spec in enumerate(part):
                    rec = store.start_session(name=spec.name, meta={"i": i})
                    ts = 1000
                    for flush in spec.flushes:
                        for payload in flush:
                            ts += 10
                            rec.record(f"k{ts % 3}", payload, result=ts if ts % 4 else None,
                                       ts_ns=ts)
                        rec.flush()
                    if spec.checkpoint:
                        rec.checkpoint({"at": ts})
                    if spec.end is not None:
                        rec.end(spec.end)
        return Path(path).read_bytes()


payloads = st.one_of(
    st.binary(max_size=40), st.text(max_size=20), st.none(),
    st.dictionaries(st.text(max_size=5), st.integers(-5, 5), max_size=3),
)
session_specs = st.builds(
    SessionSpec,
    name=st.one_of(st.none(), st.text(min_size=1, max_size=8)),
    flushes=st.lists(st.lists(payloads, max_size=4).map(tuple), max_size=4).map(tuple),
    checkpoint=st.booleans(),
    end=st.one_of(st.none(), st.just("ok"), st.just("error")),
)
file_specs = st.lists(session_specs, min_size=1, max_size=4)


# --- the record map, and rewriting a record with its CRCs fixed -------------------


def records(data: bytes) -> list[RecordHeader]:
    """The intact-looking records from the file header on, in order, stopping at damage."""
    out: list[RecordHeader] = []
    at = FILE_HEADER.size
    while at + RECORD_HEADER.size <= len(data):
        head = RECORD_HEADER.unpack_from(data, at)
        _tag, kind, codec, _flags, stored, raw, pcrc, _res, hcrc = head
        # Only the header CRC is checked: the corpus must walk into records the
        # library itself would refuse, so it does not use parse_header.
        if crc32c(data[at : at + RECORD_HEADER_CRC_SPAN]) != hcrc:
            break
        rec = RecordHeader(at, kind, codec, stored, raw, pcrc)
        if rec.end > len(data):
            break
        out.append(rec)
        at = rec.end
    return out


def payload_of(data: bytes, rec: RecordHeader) -> bytes:
    stored = data[rec.payload_offset : rec.payload_offset + rec.stored_len]
    if rec.codec == Codec.LZ4:
        try:
            return bytes(lz4.block.decompress(stored, uncompressed_size=rec.raw_len))
        except Exception:  # lz4 raises a plain Exception subclass
            return bytes(stored)
    return bytes(stored)


def refit_block(payload: bytearray) -> None:
    """Recompute a BLOCK payload's section CRCs after an edit (as far as its layout allows)."""
    if len(payload) < BLOCK_HEADER.size:
        return
    fields = list(BLOCK_HEADER.unpack_from(payload))
    # Counted from the end, which is fixed (..., action_count, checkpoint_count,
    # blob_raw_len, blob_stored_len, ckpt_raw_len, ckpt_stored_len, codecs, 3 CRCs),
    # so fields added after the session id and first seq do not shift them.
    n = fields[-11]
    blob_len, ck_len = fields[-8], fields[-6]
    col_len = 8 * n + padded(2 * n) + padded(n) + padded(8 * n)
    blob_at = BLOCK_HEADER.size + col_len
    ck_at = blob_at + padded(blob_len)
    if ck_at + ck_len > len(payload) or n > len(payload):
        return
    fields[-3] = crc32c(payload[blob_at : blob_at + blob_len])
    fields[-2] = crc32c(payload[ck_at : ck_at + ck_len])
    fields[-1] = 0
    head = BLOCK_HEADER.pack(*fields)
    cols = payload[BLOCK_HEADER.size : blob_at]
    ccrc = crc32c(cols, crc32c(head[:BLOCK_COLUMNS_CRC_SPAN]))
    payload[: BLOCK_HEADER.size] = head[:BLOCK_COLUMNS_CRC_SPAN] + ccrc.to_bytes(4, "little")


def rewrite(data: bytes, rec: RecordHeader, payload: bytes, *, raw_len: int | None = None,
            stored_len: int | None = None) -> bytes:
    """Replace ``rec``'s payload (stored uncompressed) and recompute its CRCs.

    In place when the padded size is unchanged, else spliced (later offsets shift).
    ``raw_len``/``stored_len`` override the header's lengths (lies, CRC-correct).
    """
    body = bytearray(payload)
    if rec.kind == Kind.BLOCK:
        refit_block(body)
    tag = struct.unpack_from("<Q", data, rec.offset)[0]
    head = bytearray(RECORD_HEADER.pack(
        tag, rec.kind, Codec.NONE, 0, len(body) if stored_len is None else stored_len,
        len(body) if raw_len is None else raw_len, crc32c(body), 0, 0))
    head[RECORD_HEADER_CRC_SPAN:] = crc32c(head[:RECORD_HEADER_CRC_SPAN]).to_bytes(4, "little")
    framed = bytes(head) + bytes(body) + bytes(padded(len(body)) - len(body))
    return data[: rec.offset] + framed + data[rec.end :]


# --- damage ------------------------------------------------------------------------


def flip_bits(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def overwrite(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    start = rng.randrange(len(data))
    size = rng.randint(1, 200)
    fill = rng.choice([bytes(size), b"\xff" * size, rng.randbytes(size)])
    return data[:start] + fill[: len(data) - start] + data[start + size :]


def duplicate_record(data: bytes, rng: random.Random) -> bytes:
    recs = records(data)
    if not recs:
        return data
    rec = rng.choice(recs)
    copy = data[rec.offset : rec.end]
    where = rng.choice([rec.end, len(data) & ~7, recs[-1].offset])
    return data[:where] + copy + data[where:]


def reorder_records(data: bytes, rng: random.Random) -> bytes:
    recs = records(data)
    if len(recs) < 2:
        return data
    i = rng.randrange(len(recs) - 1)
    a, b = recs[i], recs[i + 1]
    return data[: a.offset] + data[b.offset : b.end] + data[a.offset : a.end] + data[b.end :]


def _targets(data: bytes, rec: RecordHeader, recs: list[RecordHeader]) -> list[int]:
    """Values a hostile offset field may take: the record itself, backwards, others, beyond."""
    others = [r.offset for r in recs]
    return [*HOSTILE, rec.offset, rec.offset - 8, rec.end, len(data), len(data) + 8, *others]


def set_field(data: bytes, rng: random.Random) -> bytes:
    """Set one aligned 4- or 8-byte field of a record's payload to a hostile value; refit CRCs."""
    recs = records(data)
    if not recs:
        return data
    rec = rng.choice(recs)
    body = bytearray(payload_of(data, rec))
    width = rng.choice([4, 8])
    if len(body) < width:
        return data
    pos = rng.randrange(0, len(body) - width + 1, 4) if len(body) >= width + 4 else 0
    value = rng.choice(_targets(data, rec, recs)) % (1 << (8 * width))
    body[pos : pos + width] = value.to_bytes(width, "little")
    return rewrite(data, rec, bytes(body))


def lie_about_lengths(data: bytes, rng: random.Random) -> bytes:
    """A record header whose stored or raw length is huge, with its header CRC recomputed."""
    recs = records(data)
    if not recs:
        return data
    rec = rng.choice(recs)
    lie = rng.choice([2**32 - 1, 2**31, 2**27 + 8, rec.stored_len + 8, 0])
    body = payload_of(data, rec)
    if rng.random() < 0.5:
        return rewrite(data, rec, body, raw_len=lie)
    return rewrite(data, rec, body, stored_len=lie)


def retarget_trailer(data: bytes, rng: random.Random) -> bytes:
    """Point a trailer's toc_offset (or prev_trailer) backwards, at itself, or at another record."""
    recs = records(data)
    trailers = [r for r in recs if r.kind == Kind.TRAILER]
    if not trailers:
        return data
    rec = rng.choice(trailers)
    body = bytearray(payload_of(data, rec))
    field = rng.choice([0, 8, 16]) if len(body) >= 24 else 0
    value = rng.choice(_targets(data, rec, recs)) % 2**64
    body[field : field + 8] = value.to_bytes(8, "little")
    return rewrite(data, rec, bytes(body))


def loop_toc_runs(data: bytes, rng: random.Random) -> bytes:
    """Make a TOC's run list point at the TOC itself, at a newer TOC, or repeat a run."""
    recs = records(data)
    tocs = [r for r in recs if r.kind == Kind.TOC]
    if not tocs:
        return data
    rec = rng.choice(tocs)
    body = bytearray(payload_of(data, rec))
    if len(body) < TOC_HEADER.size:
        return data
    run_count = struct.unpack_from("<I", body, 0)[0]
    newer = [t.offset for t in tocs if t.offset > rec.offset]
    target = rng.choice([rec.offset, *newer, *(t.offset for t in tocs)])
    if run_count and len(body) >= TOC_HEADER.size + 16:
        i = rng.randrange(min(run_count, (len(body) - TOC_HEADER.size) // 16))
        struct.pack_into("<Q", body, TOC_HEADER.size + 16 * i, target)
    else:
        # Add a run pointing at ``target``: one more run, 16 more bytes.
        struct.pack_into("<I", body, 0, run_count + 1)
        body[TOC_HEADER.size : TOC_HEADER.size] = struct.pack("<QI4x", target, 1)
    return rewrite(data, rec, bytes(body))


DAMAGE: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "flip": flip_bits,
    "truncate": truncate,
    "overwrite": overwrite,
    "duplicate": duplicate_record,
    "reorder": reorder_records,
    "field": set_field,
    "lengths": lie_about_lengths,
    "trailer": retarget_trailer,
    "tocloop": loop_toc_runs,
}


def damage(data: bytes, names: list[str], seed: int) -> bytes:
    """Apply the named damages in order, each with its own seeded randomness."""
    for i, name in enumerate(names):
        data = DAMAGE[name](data, random.Random(f"{seed}/{i}/{name}"))
    return data


damage_plans = st.tuples(
    st.lists(st.sampled_from(sorted(DAMAGE)), min_size=1, max_size=3),
    st.integers(0, 2**32),
)


@st.composite
def damaged_files(draw: st.DrawFn) -> bytes:
    """A real file built from random sessions, then damaged one to three ways."""
    spec = draw(file_specs)
    data = build_file(spec, raw=draw(st.booleans()), reopen=draw(st.booleans()))
    names, seed = draw(damage_plans)
    return damage(data, names, seed)


# --- the seed corpus ---------------------------------------------------------------


def seed_files() -> Iterator[bytes]:
    """Golden files, small generated files, and damaged variants of each."""
    rng = random.Random(20261121)
    golden = sorted((ROOT.parent / "tests" / "golden").glob("*.mseg"))
    bases = [p.read_bytes() for p in golden]
    for i in range(12):
        specs = [
            SessionSpec(
                name=None if j % 3 == 0 else f"s{i}.{j}",
                flushes=tuple(tuple(rng.choice([b"\x00" * 3, "text", {"a": j}, None, b"x" * 90])
                                    for _ in range(rng.randint(0, 4)))
                              for _ in range(rng.randint(0, 3))),
                checkpoint=bool(j % 2), end=[None, "ok", "error"][(i + j) % 3],
            )
            for j in range(1 + i % 4)
        ]
        bases.append(build_file(specs, raw=i % 2 == 0, reopen=i % 3 != 0))
    yield b""
    yield memseg.format.MAGIC
    for base in bases:
        yield base
        for name in sorted(DAMAGE):
            for _ in range(3):
                yield damage(base, [name], rng.randrange(2**32))
        for _ in range(4):
            yield damage(base, rng.sample(sorted(DAMAGE), 2), rng.randrange(2**32))


def write_corpus(out: Path) -> int:
    """Replace the seed corpus in ``out`` (named by content hash); return the file count."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.mseg"):
        old.unlink()
    names = set()
    for data in seed_files():
        name = hashlib.sha1(data).hexdigest()[:16] + ".mseg"
        names.add(name)
        (out / name).write_bytes(data)
    return len(names)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "corpus"
    print(f"{write_corpus(target)} files in {target}")
