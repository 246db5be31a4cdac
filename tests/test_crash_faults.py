"""I/O errors: EIO from every fsync and write, ENOSPC from every write.

A failed fsync must not be retried as if it had succeeded: the call raises
WriteFailedError, the store refuses every later write, and the file (reopened
at once, or after a crash right then) shows the state before or after the
failed commit, never one in between. A full disk leaves a file that opens clean.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import memseg
from memseg.forensics import verify
from tests.crashmodel import PATH, Model, State, Workload, read_state, record_figures, standard_workload
from tests.faultfs import Crash, SimFS, damage_variants
from tests.test_crash import check_recovery, reopen_and_append

LONG = bool(os.environ.get("MEMSEG_LONG"))


def totals() -> SimFS:
    fs = SimFS()
    standard_workload(Workload(fs, Model()))
    return fs


def run_faulty(fs: SimFS) -> tuple[Workload, BaseException | None]:
    """Run the workload on a faulty disk; return it and the error that stopped it."""
    w = Workload(fs, Model())
    try:
        standard_workload(w)
    except (memseg.WriteFailedError, OSError) as exc:
        return w, exc
    return w, None


def assert_refuses_writes(w: Workload) -> None:
    """After a failed write or fsync every write path raises WriteFailedError."""
    store = w.store
    assert store is not None
    refusals: list[Callable[[], Any]] = [
        lambda: store.start_session(name="after-failure"),
        store.commit_staged,
    ]
    for rec in w.recorders.values():
        if not rec.closed:
            rec.record("after", "failure")
            refusals.append(rec.flush)
    for attempt in refusals:
        try:
            attempt()
        except memseg.WriteFailedError as exc:
            assert exc.reason == "write_failed"
        except memseg.ClosedError as exc:
            # The failure came from close(), which closes the store regardless.
            assert exc.reason == "closed"
        else:
            raise AssertionError(f"{attempt} succeeded after a failed write")


def check_after_failure(fs: SimFS, w: Workload, exc: BaseException, outcomes: Counter[str]) -> None:
    """The failure's aftermath: refusal, then before-or-after on reopen and after a crash."""
    model = w.model
    if w.store is None:
        # Creating or recovering the file failed inside open(): no store, no
        # commit in flight; the OSError reaches the caller as it is.
        assert isinstance(exc, OSError)
        outcomes["open_failed"] += 1
    else:
        assert isinstance(exc, memseg.WriteFailedError), repr(exc)
        assert exc.reason == "write_failed"
        assert isinstance(exc.__cause__, OSError)
        assert_refuses_writes(w)
        outcomes["commit_failed"] += 1
    # A crash right after the failure, before anything else reaches the disk.
    for damage in damage_variants(fs, seeds=1):
        outcomes[f"crash_{check_recovery(fs.crash_image(damage), model)}"] += 1
    if w.store is not None:
        w.store.close()
    # No crash: the same disk, reopened.
    fs.eio_sync_at = fs.eio_write_at = fs.enospc_write_at = None
    if not fs.exists(PATH):
        return
    try:
        with memseg.open(PATH, "r", fs=fs) as reader:
            state: State = read_state(reader)
    except (memseg.NotMemsegError, memseg.CorruptError) as unreadable:
        # A creation that failed before its header was whole: nothing committed.
        assert isinstance(unreadable, memseg.NotMemsegError) or unreadable.reason == "short_header"
        assert not model.acked
        reopen_and_append(fs, model, "uncreated")
        return
    assert state in model.candidates, "reopened file shows a state between commits"
    outcomes[f"reopen_commit_{model.candidates.index(state)}_of_{len(model.candidates) - 1}"] += 1
    verify_clean(fs)
    reopen_and_append(fs, model, "reopened")


def verify_clean(fs: SimFS) -> None:
    """The forensics verifier finds no problem in the file."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "copy.mseg"
        copy.write_bytes(fs.read_file(PATH))
        report = verify(copy)
    assert report.ok, report.problems


def sweep_faults(kind: str, count: int) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    for n in range(count):
        fs = SimFS()
        setattr(fs, kind, n)
        w, exc = run_faulty(fs)
        assert exc is not None, f"{kind}={n} raised nothing"
        check_after_failure(fs, w, exc, outcomes)
    return outcomes


def test_eio_from_every_fsync_is_never_taken_for_success() -> None:
    outcomes = sweep_faults("eio_sync_at", totals().syncs)
    record_figures("eio_fsync", {"injections": totals().syncs, "outcomes": dict(outcomes)})
    assert outcomes["commit_failed"] > 0


def test_eio_from_every_write() -> None:
    outcomes = sweep_faults("eio_write_at", totals().writes)
    record_figures("eio_write", {"injections": totals().writes, "outcomes": dict(outcomes)})
    assert outcomes["commit_failed"] > 0


def test_enospc_from_every_write_leaves_a_file_that_opens_clean() -> None:
    outcomes = sweep_faults("enospc_write_at", totals().writes)
    record_figures("enospc_write", {"injections": totals().writes, "outcomes": dict(outcomes)})
    assert outcomes["commit_failed"] > 0


def test_failed_fsync_then_crash_with_writes_lost() -> None:
    """fsync reported EIO and the machine then died: the commit's data may be gone."""
    fs = SimFS(eio_sync_at=3)
    w, exc = run_faulty(fs)
    assert isinstance(exc, memseg.WriteFailedError)
    with contextlib.suppress(Crash):
        fs.crash_at = fs.ops
        assert w.store is not None
        w.store.close()
    for damage in damage_variants(fs, seeds=2):
        check_recovery(fs.crash_image(damage), w.model)


def test_store_closed_after_failure_releases_its_lock() -> None:
    fs = SimFS(eio_sync_at=4)
    w, exc = run_faulty(fs)
    assert isinstance(exc, memseg.WriteFailedError)
    assert w.store is not None
    w.store.close()
    with memseg.open(PATH, "a", fs=fs) as again:
        rec = again.start_session(session_id=uuid.UUID(int=77))
        rec.end()
