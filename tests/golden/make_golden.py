"""Regenerate the golden files: `python -m tests.golden.make_golden`.

Golden files are checked in; the test reads them back against their JSON in
every run, so a change that breaks reading old files fails loudly. Only
regenerate them together with a format version change.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import memseg

HERE = Path(__file__).parent


def describe(path: Path) -> dict[str, Any]:
    """Everything a reader must find in the file, as JSON."""
    with memseg.open(path) as store:
        sessions = []
        for info in store.sessions():
            s = store.session(info.id)
            sessions.append({
                "id": str(info.id), "name": info.name, "state": str(info.state),
                "meta": info.meta, "status": info.status, "created_ns": info.created_ns,
                "ended_ns": info.ended_ns, "action_count": info.action_count,
                "actions": [
                    {"seq": a.seq, "ts_ns": a.ts_ns, "kind": a.kind, "payload": a.payload.hex(),
                     "result": None if a.result is None else a.result.hex(),
                     "payload_type": a.payload_type, "result_type": a.result_type}
                    for a in s.actions
                ],
                "checkpoints": [
                    {"id": c.id, "at_seq": c.at_seq, "ts_ns": c.ts_ns, "snapshot": c.snapshot.hex()}
                    for c in s.checkpoints
                ],
            })
        commit = store.commit
        return {"commit_seq": commit.seq if commit else 0, "sessions": sessions}


def _sid(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


def build(name: str) -> Path:
    path = HERE / f"{name}.mseg"
    path.unlink(missing_ok=True)
    with memseg.open(path, "a") as store:
        if name == "one_action":
            with store.start_session(name="hello", session_id=_sid(1)) as rec:
                rec.record("message", "hi", ts_ns=1_000)
        elif name == "agent_run":
            with store.start_session(name="run-1", meta={"model": "m", "n": 1},
                                     session_id=_sid(2)) as rec:
                rec.record("user_message", {"text": "fix the bug"}, ts_ns=10)
                rec.record("thinking", "look at the test first", ts_ns=11)
                rec.record("tool_call", {"tool": "bash", "cmd": "pytest"}, result={"exit": 1},
                           ts_ns=12)
                rec.checkpoint({"files": ["a.py"]}, ts_ns=13)
                rec.record("diff", b"--- a.py\n+++ a.py\n", result=b"applied", ts_ns=14)
            live = store.start_session(name="still-running", session_id=_sid(3))
            live.record("thinking", "", ts_ns=20)
            live.flush()
            store.start_session(name="empty", session_id=_sid(4)).end(status="cancelled")
    (HERE / f"{name}.json").write_text(json.dumps(describe(path), indent=1, sort_keys=True) + "\n")
    return path


if __name__ == "__main__":
    for golden in ("one_action", "agent_run"):
        print(build(golden))
