"""Power loss at every step of a workload, with unsynced writes kept, dropped, garbled and torn.

For every crash point k (the machine dies before the k-th mutating file-system
call) and every damage variant, the rebooted disk must show exactly one state
the model allows (the last acknowledged one, or one the interrupted call was
committing: never lost commits, never uncommitted data), and must open for
writing again and take new commits.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

import memseg
from tests.crashmodel import (
    PATH,
    Model,
    State,
    Workload,
    lifecycle_workload,
    read_state,
    record_figures,
    standard_workload,
)
from tests.faultfs import Crash, Damage, SimFS, damage_variants

LONG = bool(os.environ.get("MEMSEG_LONG"))
PROBE = uuid.UUID(int=0xFFFF)


@dataclass
class Tally:
    """What a crash sweep tried and saw, for the figures."""

    crash_points: int = 0
    images: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    variants: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"crash_points": self.crash_points, "distinct_images_checked": self.images,
                "images_by_damage": dict(self.variants), "outcomes": dict(self.outcomes),
                "failures": len(self.failures)}


def run_until_crash(fs: SimFS, workload: Callable[[Workload], None], sync: str = "commit") -> Model:
    """Run ``workload`` on ``fs`` until it finishes or the simulated machine dies."""
    model = Model()
    w = Workload(fs, model, sync="commit" if sync == "commit" else "none")
    with contextlib.suppress(Crash):
        workload(w)
    return model


def count_ops(workload: Callable[[Workload], None]) -> int:
    fs = SimFS()
    run_until_crash(fs, workload)
    return fs.ops


def image_key(fs: SimFS) -> str:
    digest = hashlib.sha256()
    for name in sorted(fs.names):
        digest.update(name.encode() + b"\0" + fs.read_file(name) + b"\0")
    return digest.hexdigest()


def check_recovery(image: SimFS, model: Model) -> str:
    """Reopen a post-crash disk; return the outcome, raise AssertionError on a violation."""
    if not image.exists(PATH):
        if model.acked:
            raise AssertionError("the file vanished although commits were acknowledged")
        outcome = "no_file"
    else:
        try:
            with memseg.open(PATH, "r", fs=image) as reader:
                state = read_state(reader)
        except (memseg.NotMemsegError, memseg.CorruptError) as exc:
            # Only a file whose creation never reached its first fsync: nothing
            # in it was ever committed. The writer below recreates it if it can.
            if isinstance(exc, memseg.CorruptError) and exc.reason != "short_header":
                raise
            if model.acked:
                raise AssertionError("acknowledged file no longer recognised") from None
            state = {}
            outcome = "uncreated"
        else:
            if state not in model.candidates:
                raise AssertionError(describe(state, model))
            outcome = f"commit_{model.candidates.index(state)}_of_{len(model.candidates) - 1}"
    reopen_and_append(image, model, outcome)
    return outcome


def reopen_and_append(image: SimFS, model: Model, outcome: str) -> None:
    """The file opens for writing, keeps what it showed, and takes a new commit."""
    try:
        writer = memseg.open(PATH, "a", fs=image)
    except memseg.NotMemsegError as exc:
        # A header that was garbled before its first fsync: not a memseg file,
        # so memseg must not overwrite it. Nothing was ever committed in it.
        assert outcome == "uncreated" and exc.reason == "bad_magic"
        return
    with writer:
        before = read_state(writer)
        rec = writer.start_session(name="probe", session_id=PROBE)
        rec.record("probe", {"after": "crash"}, ts_ns=1)
        rec.end("ok")
    with memseg.open(PATH, "r", fs=image) as reader:
        after = read_state(reader)
    probe = after.pop(PROBE)
    assert probe.actions == (("probe", 1, (("after", "crash"),), None),)
    assert after == before, "appending after recovery changed older sessions"


def describe(state: State, model: Model) -> str:
    """A short account of how ``state`` differs from what the model allows."""
    lines = [f"state after crash is none of the {len(model.candidates)} allowed states"]
    for i, cand in enumerate(model.candidates):
        diffs = [str(sid) for sid in set(cand) | set(state) if cand.get(sid) != state.get(sid)]
        lines.append(f"  vs candidate {i}: sessions differing {sorted(diffs)}")
    return "\n".join(lines)


def sweep(workload: Callable[[Workload], None], *, seeds: int, sync: str = "commit",
          variants: Callable[[SimFS], list[Damage]] | None = None,
          check: Callable[[SimFS, Model], str] = check_recovery) -> Tally:
    """Crash ``workload`` before every one of its operations; check every damaged image."""
    tally = Tally()
    total = count_ops(workload)
    for k in range(total + 1):
        fs = SimFS(crash_at=k)
        model = run_until_crash(fs, workload, sync)
        tally.crash_points += 1
        seen: set[str] = set()
        for damage in (variants or (lambda f: damage_variants(f, seeds=seeds)))(fs):
            image = fs.crash_image(damage)
            key = image_key(image)
            if key in seen:
                continue
            seen.add(key)
            tally.images += 1
            tally.variants[damage.kind] += 1
            try:
                tally.outcomes[check(image, model)] += 1
            except AssertionError as exc:
                tally.failures.append(f"crash before op {k}, damage {damage.name}: {exc}")
            except memseg.MemsegError as exc:
                tally.failures.append(f"crash before op {k}, damage {damage.name}: "
                                      f"{type(exc).__name__} {exc.reason} at {exc.offset}: {exc}")
    return tally


def assert_clean(tally: Tally, section: str) -> None:
    record_figures(section, tally.as_dict())
    assert tally.crash_points > 0 and tally.images >= tally.crash_points
    assert not tally.failures, "\n".join(tally.failures[:8])


def long_workload(w: Workload) -> None:
    """More flushes than fit in a snapshot's recent list, so INDEX records get written."""
    standard_workload(w, flushes=70, payload_bytes=300)


def test_every_crash_point_keeps_every_acknowledged_commit() -> None:
    tally = sweep(standard_workload, seeds=6 if LONG else 2)
    assert_clean(tally, "crash_sync_commit")


@pytest.mark.skipif(not hasattr(memseg, "compact"), reason="compaction has not landed")
def test_every_crash_point_of_archive_and_compaction() -> None:
    tally = sweep(lifecycle_workload, seeds=4 if LONG else 1)
    assert_clean(tally, "crash_archive_compact")


@pytest.mark.slow
def test_every_crash_point_of_a_long_workload() -> None:
    tally = sweep(long_workload, seeds=2)
    assert_clean(tally, "crash_sync_commit_long")


def check_unsynced_power_loss(image: SimFS, model: Model) -> str:
    """sync="none" after power loss promises no durability, only memseg's own errors."""
    try:
        with memseg.open(PATH, "r", fs=image) as reader:
            read_state(reader)
        with memseg.open(PATH, "a", fs=image):
            pass
    except memseg.MemsegError as exc:
        return f"error_{exc.reason}"
    except FileNotFoundError:
        return "no_file"
    return "opened"


def test_sync_none_survives_a_process_crash() -> None:
    """A process crash keeps the page cache, so even unsynced commits all survive."""
    tally = sweep(standard_workload, seeds=0, sync="none", variants=lambda fs: [Damage("keep")])
    assert_clean(tally, "crash_sync_none_process")


def test_sync_none_power_loss_raises_only_memseg_errors() -> None:
    tally = sweep(standard_workload, seeds=2, sync="none", check=check_unsynced_power_loss)
    assert_clean(tally, "crash_sync_none_power_loss")


def test_crash_image_model_drops_unsynced_creation() -> None:
    """The simulated disk itself: an unsynced file creation does not survive power loss."""
    fs = SimFS()
    handle = fs.open("/d/f", write=True, create=True)
    handle.write(0, b"abc")
    handle.sync()
    assert not fs.crash_image(Damage("drop")).exists("/d/f")
    fs.sync_dir("/d")
    handle.write(3, b"def")
    image = fs.crash_image(Damage("drop"))
    assert image.read_file("/d/f") == b"abc"
    assert fs.crash_image(Damage("keep")).read_file("/d/f") == b"abcdef"
    torn = fs.crash_image(Damage("torn", sector=2, prefix=0)).read_file("/d/f")
    assert torn == b"abcd"  # the only sector boundary inside the write is offset 4


def recovery_workload(w: Workload) -> None:
    """What a program does after a crash: reopen (cutting or keeping the tail), record, close."""
    w.open()
    sid = w.start(100, "after-crash")
    w.record(sid, "again", {"n": 1})
    w.flush(sid)
    w.record(sid, "again", {"n": 2})
    w.end(sid, "ok")
    w.close()


def crashed_images(limit: int) -> list[tuple[SimFS, State]]:
    """Post-crash disks whose file has a tail after its newest commit, with the state they show."""
    unverified: list[tuple[SimFS, State]] = []
    torn: list[tuple[SimFS, State]] = []
    total = count_ops(standard_workload)
    for k in range(total):
        fs = SimFS(crash_at=k)
        run_until_crash(fs, standard_workload)
        wanted = {"torn": torn, "unverified": unverified}
        for damage in damage_variants(fs, seeds=4)[1:]:
            image = fs.crash_image(damage)
            if not image.exists(PATH):
                continue
            try:
                with memseg.open(PATH, "r", fs=image) as reader:
                    if reader.tail_bytes == 0:
                        continue
                    kind = "unverified" if reader.located.unverified else "torn"
                    if kind in wanted:
                        wanted.pop(kind).append((image, read_state(reader)))
            except memseg.MemsegError:
                continue
    # Half with an unverified commit in the tail (kept and appended after), half torn (cut).
    return _spread(unverified, limit // 2) + _spread(torn, limit - limit // 2)


def _spread(items: list[tuple[SimFS, State]], n: int) -> list[tuple[SimFS, State]]:
    step = max(1, len(items) // max(n, 1))
    return items[::step][:n]


def test_crash_during_recovery_from_a_crash() -> None:
    """A second crash at every step of the recovery after the first: cutting a torn tail,
    keeping an unverified one, appending after it."""
    tally = Tally()
    for first, shown in crashed_images(1000 if LONG else 6):

        def workload(w: Workload, shown: State = shown) -> None:
            w.model.live, w.model.staged, w.model.acked = dict(shown), dict(shown), dict(shown)
            w.model.candidates = [dict(shown)]
            recovery_workload(w)

        files = first.files()
        total = count_ops_on(files, workload)
        for j in range(total + 1):
            fs = SimFS(files, crash_at=j)
            model = run_until_crash(fs, workload)
            tally.crash_points += 1
            for damage in damage_variants(fs, seeds=1):
                tally.images += 1
                tally.variants[damage.kind] += 1
                try:
                    tally.outcomes[check_recovery(fs.crash_image(damage), model)] += 1
                except (AssertionError, memseg.MemsegError) as exc:
                    tally.failures.append(f"second crash before op {j}, {damage.name}: {exc!r}")
    assert_clean(tally, "crash_during_recovery")


def count_ops_on(files: dict[str, bytes], workload: Callable[[Workload], None]) -> int:
    fs = SimFS(files)
    run_until_crash(fs, workload)
    return fs.ops
