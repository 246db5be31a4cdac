"""The demo store looks like a finished run: no action is newer than its session's end."""

from __future__ import annotations

from pathlib import Path

import memseg
from memseg.demo import record_demo


def test_demo_actions_lie_before_their_sessions_end(tmp_path: Path) -> None:
    path = tmp_path / "demo.mseg"
    record_demo(path)
    with memseg.open(path, "a") as store:
        infos = store.sessions()
        for info in infos:
            newest = max(int(t) for t in store.session(info.id).actions.ts_ns)
            assert newest <= info.last_activity_ns
            if info.ended_ns is not None:
                assert newest <= info.ended_ns, info.name
        # So a sweep right after the demo finds its ended sessions inactive.
        report = store.sweep(0, dry_run=True)
        ended = {i.id for i in infos if i.state == "ended"}
        assert ended and {item.id for item in report.archived} == ended
