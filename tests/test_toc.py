"""TOC payloads: decode gives back what was encoded, and every bad entry gets its exact error."""

from __future__ import annotations

import dataclasses
import struct
import uuid
from collections.abc import Callable

import pytest

import memseg
from memseg.format import MAX_NAME, TOC_ENTRY, TOC_HEADER, TOC_RUN, State
from memseg.toc import Run, TocEntry, decode_toc, encode_toc

TOC_AT = 1 << 20  # where the TOC record is said to be; every entry must point before it
# Byte offsets of TOC_ENTRY fields (see its struct format).
_FIELDS = ("sid", "snap", "sess", "created", "last", "ended", "actions", "ckpts", "stored",
           "state", "flags", "name_len", "status_len", "res1", "meta_len", "res2")
_FORMATS = ["16s", *TOC_ENTRY.format[1:].replace("16s", "")]


def _field_offset(name: str) -> int:
    index = _FIELDS.index(name)
    return struct.calcsize("<" + "".join(_FORMATS[:index]))


def _entry(i: int, **changes: object) -> TocEntry:
    entry = TocEntry(
        uuid.UUID(int=i + 1), 4096 + 64 * i, 64 + 8 * i, 10 * i, 10 * i + 5,
        10 * i + 7 if i % 2 else None, i * 3, i, 100 + i, State.ENDED,
        f"séance-{i}" if i % 3 else None, "ok" if i % 2 else None, b'{"i":%d}' % i,
    )
    return dataclasses.replace(entry, **changes)  # type: ignore[arg-type]


def _payload(entries: list[TocEntry], runs: tuple[Run, ...] = ()) -> bytearray:
    return bytearray(encode_toc(list(runs), entries))


def _entry_at(payload: bytearray, index: int, runs: int = 0) -> int:
    return TOC_HEADER.size + runs * TOC_RUN.size + index * TOC_ENTRY.size


def _put(payload: bytearray, index: int, name: str, value: int) -> None:
    at = _entry_at(payload, index) + _field_offset(name)
    fmt = "<" + _FORMATS[_FIELDS.index(name)]
    struct.pack_into(fmt, payload, at, value)


def test_decode_gives_back_every_field_of_every_entry() -> None:
    entries = [_entry(i) for i in range(7)]
    runs = (Run(8192, 3), Run(512, 9))
    got_runs, got = decode_toc(bytes(_payload(entries, runs)), TOC_AT)
    assert got_runs == list(runs)
    assert got == entries
    assert decode_toc(bytes(_payload([])), TOC_AT) == ([], [])


Mutation = Callable[[bytearray], None]


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda p: _put(p, 2, "state", 9), "toc_entry"),
    (lambda p: _put(p, 2, "flags", 0x80), "toc_entry"),
    (lambda p: _put(p, 2, "res1", 1), "toc_entry"),
    (lambda p: _put(p, 2, "res2", 1), "toc_entry"),
    (lambda p: _put(p, 2, "sess", 8), "bad_reference"),
    (lambda p: _put(p, 2, "sess", 4096 + 64 * 2 + 8), "bad_reference"),
    (lambda p: _put(p, 2, "snap", TOC_AT), "bad_reference"),
    (lambda p: _put(p, 2, "meta_len", 1000), "toc_layout"),
    (lambda p: _put(p, 5, "meta_len", 1), "toc_layout"),
], ids=["state", "flags", "res1", "res2", "session-before-header", "session-after-snapshot",
        "snapshot-not-before-toc", "strings-past-heap", "heap-not-used-up"])
def test_each_bad_entry_field_is_refused(mutate: Mutation, reason: str) -> None:
    payload = _payload([_entry(i) for i in range(6)])
    mutate(payload)
    with pytest.raises(memseg.CorruptError) as err:
        decode_toc(bytes(payload), TOC_AT)
    assert err.value.reason == reason
    assert err.value.offset == TOC_AT


def test_the_first_bad_entry_decides_the_error() -> None:
    payload = _payload([_entry(i) for i in range(6)])
    _put(payload, 1, "snap", TOC_AT + 8)  # bad_reference, first
    _put(payload, 4, "state", 0)  # toc_entry, later
    with pytest.raises(memseg.CorruptError) as err:
        decode_toc(bytes(payload), TOC_AT)
    assert err.value.reason == "bad_reference"


def test_names_too_long_and_strings_not_utf8_are_refused() -> None:
    long_name = _payload([_entry(0), _entry(1, name="n" * (MAX_NAME + 1))])
    with pytest.raises(memseg.CorruptError) as err:
        decode_toc(bytes(long_name), TOC_AT)
    assert err.value.reason == "toc_entry"

    entries = [_entry(i, name=f"name{i}", status="done") for i in range(3)]
    for what in ("name", "status"):
        payload = _payload(entries)
        heap = _entry_at(payload, 3)
        # Second entry's strings follow the first's name, status and meta.
        first = len(b"name0") + len(b"done") + len(entries[0].meta)
        payload[heap + first + (0 if what == "name" else len(b"name1"))] = 0xFF
        with pytest.raises(memseg.CorruptError) as err:
            decode_toc(bytes(payload), TOC_AT)
        assert err.value.reason == "bad_string"
        assert what in str(err.value)


def test_a_string_whose_flag_is_clear_must_still_be_utf8() -> None:
    payload = _payload([_entry(0, name="abc")])
    flags_at = _entry_at(payload, 0) + _field_offset("flags")
    payload[flags_at] &= ~0x02  # FLAG_HAS_NAME
    _, (entry,) = decode_toc(bytes(payload), TOC_AT)
    assert entry.name is None
    payload[_entry_at(payload, 1)] = 0xFF  # the heap starts after the only entry
    with pytest.raises(memseg.CorruptError) as err:
        decode_toc(bytes(payload), TOC_AT)
    assert err.value.reason == "bad_string"
