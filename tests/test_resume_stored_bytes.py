"""Regression: a resumed session keeps counting its stored bytes from where the TOC left them.

Snapshots store 0 in their stored_bytes field, so resume() must take the count from the TOC
entry; taking it from the snapshot restarted the count near zero.
"""

from __future__ import annotations

from pathlib import Path

import memseg


def test_resume_continues_stored_bytes(store_path: Path) -> None:
    with memseg.open(store_path, "a") as store:
        rec = store.start_session(name="s")
        rec.record("k", b"a" * 100)
        rec.flush()
    with memseg.open(store_path, "a") as store:
        (before,) = store.sessions()
        rec = store.resume("s")
        rec.record("k", b"b")
        rec.flush()
        (after,) = store.sessions()
    assert before.stored_bytes > 0
    assert after.stored_bytes > before.stored_bytes
    with memseg.open(store_path, "r") as reader:
        assert reader.sessions()[0].stored_bytes == after.stored_bytes
