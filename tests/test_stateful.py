"""A state machine over start / record / checkpoint / flush / end / resume / reopen.

The model is plain Python: per session, what a reader must see after a reopen.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

import memseg
from tests.helpers import ModelAction, ModelSession, assert_session_matches


class StoreMachine(RuleBasedStateMachine):
    active = Bundle("active")

    @initialize()
    def setup(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="memseg-sm-"))
        self.path = self.dir / "s.mseg"
        self.store = memseg.open(self.path, "a")
        self.recorders: dict[uuid.UUID, memseg.Recorder] = {}
        self.models: dict[uuid.UUID, ModelSession] = {}
        self.clock = 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    @rule(target=active, name=st.none() | st.text(max_size=10))
    def start(self, name: str | None) -> uuid.UUID:
        rec = self.store.start_session(name=name, meta={"n": len(self.models)})
        self.recorders[rec.id] = rec
        self.models[rec.id] = ModelSession(name, {"n": len(self.models)})
        return rec.id

    @rule(sid=active, kind=st.sampled_from(["a", "b", "c"]), payload=st.text(max_size=30),
          with_result=st.booleans())
    def record(self, sid: uuid.UUID, kind: str, payload: str, with_result: bool) -> None:
        rec = self.recorders.get(sid)
        if rec is None:
            return  # closed by a reopen and not resumed yet
        ts = self._tick()
        result = {"ok": payload} if with_result else None
        rec.record(kind, payload, result=result, ts_ns=ts)
        self.models[sid].actions.append(ModelAction(kind, ts, payload, result))

    @rule(sid=active)
    def checkpoint(self, sid: uuid.UUID) -> None:
        rec = self.recorders.get(sid)
        if rec is None:
            return
        model = self.models[sid]
        cid = rec.checkpoint({"at": len(model.actions)}, ts_ns=self._tick())
        model.checkpoints.append((cid, len(model.actions), {"at": len(model.actions)}))

    @rule(sid=active)
    def flush(self, sid: uuid.UUID) -> None:
        rec = self.recorders.get(sid)
        if rec is not None:
            rec.flush()

    @rule(sid=consumes(active), status=st.sampled_from(["ok", "error"]))
    def end(self, sid: uuid.UUID, status: str) -> None:
        rec = self.recorders.pop(sid, None) or self.store.resume(sid)
        rec.end(status=status)
        self.models[sid].state, self.models[sid].status = "ended", status

    @rule(sid=active)
    def resume(self, sid: uuid.UUID) -> None:
        if sid not in self.recorders:
            self.recorders[sid] = self.store.resume(sid)

    @rule()
    def reopen(self) -> None:
        # Closing flushes every recorder: their sessions stay active and resumable.
        self.store.close()
        self.recorders.clear()
        self.store = memseg.open(self.path, "a")

    @precondition(lambda self: bool(self.models))
    @rule()
    def read_back(self) -> None:
        for rec in self.recorders.values():
            rec.flush()
        with memseg.open(self.path) as reader:
            assert [i.id for i in reader.sessions()] == list(self.models)
            for sid, model in self.models.items():
                assert_session_matches(reader.session(sid), model)

    @invariant()
    def writer_sees_committed_counts(self) -> None:
        for info in self.store.sessions():
            assert info.action_count <= len(self.models[info.id].actions)


StoreMachine.TestCase.settings = StoreMachine.TestCase.settings  # profile from conftest
TestStore = StoreMachine.TestCase
