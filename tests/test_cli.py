"""The memseg command line: every subcommand, human and --json output, exit codes,
and the promise that reading commands leave the file exactly as it was."""

from __future__ import annotations

import dataclasses
import fcntl
import io
import json
import os
import random
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import memseg
from memseg.cli import main
from memseg.cliout import Out, to_json
from memseg.demo import record_demo
from memseg.format import FILE_HEADER
from tests.forensic_support import build_store, file_state, stored_actions, with_damaged_header
from tests.helpers import ModelSession

Sample = tuple[Path, dict[uuid.UUID, ModelSession]]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "demo.mseg"
    record_demo(path)
    path.chmod(0o444)
    return path


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    path = tmp_path_factory.mktemp("sample") / "sample.mseg"
    model = build_store(path, seed=3, sessions=3, actions=40)
    path.chmod(0o444)
    return path, model


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, Any]:
    code, out, _ = run(capsys, *argv, "--json")
    return code, json.loads(out)


def subproc(*argv: object, check_code: int | None = None) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run([sys.executable, "-m", "memseg", *map(str, argv)], capture_output=True,
                          timeout=120, check=False)
    if check_code is not None:
        assert done.returncode == check_code, done.stderr.decode()
    return done


# --- through the real entry point ----------------------------------------------------


def test_demo_through_python_dash_m(tmp_path: Path) -> None:
    path = tmp_path / "demo.mseg"
    done = subproc("demo", path, check_code=0)
    text = done.stdout.decode()
    assert "fix-short-header" in text and "profile-importer" in text
    with memseg.open(path) as store:
        states = sorted(s.state.value for s in store.sessions())
        assert states == ["active", "ended", "ended"]
        kinds = store.session("fix-short-header").actions.kind_counts()
        assert {"user_message", "thinking", "tool_call", "token_usage"} <= set(kinds)
        assert store.session("fix-short-header").checkpoints
    verified = json.loads(subproc("verify", path, "--json", check_code=0).stdout)
    assert verified["ok"] is True and verified["problems"] == []


def test_console_script_is_installed(demo: Path) -> None:
    exe = shutil.which("memseg")
    if exe is None:
        pytest.skip("the memseg console script is not on PATH")
    done = subprocess.run([exe, "info", str(demo), "--json"], capture_output=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sessions_by_state"]["active"] == 1


def test_cat_raw_writes_the_stored_bytes(demo: Path) -> None:
    with memseg.open(demo) as store:
        session = store.session("profile-importer")
        blob = next(a for a in session.actions if isinstance(a.result_value(), bytes))
        seq, want = blob.seq, blob.result
    done = subproc("cat", demo, "profile-importer", seq, "--raw", "--part", "result", check_code=0)
    assert done.stdout == want


def test_damage_and_bad_input_exit_codes_through_a_process(demo: Path, tmp_path: Path) -> None:
    raw = bytearray(demo.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    damaged = tmp_path / "damaged.mseg"
    damaged.write_bytes(bytes(raw))
    done = subproc("verify", damaged, check_code=1)
    first = done.stdout.decode().splitlines()[0].split()
    assert int(first[0]) >= FILE_HEADER.size and first[1]
    text = tmp_path / "text.txt"
    text.write_text("not a memseg file\n")
    assert b"bad_magic" in subproc("info", text, check_code=2).stderr
    assert subproc("ls", tmp_path / "missing.mseg", check_code=2).stderr
    assert subproc("frobnicate", check_code=2).stderr


def test_salvage_through_a_process(sample: Sample, tmp_path: Path) -> None:
    path, _ = sample
    cut = tmp_path / "cut.mseg"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    done = subproc("salvage", cut, tmp_path / "out.mseg", "--json")
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert report["actions"] == sum(len(v) for v in stored_actions(tmp_path / "out.mseg").values())
    assert subproc("salvage", cut, tmp_path / "out.mseg", check_code=2).stderr


# --- info, ls, show, cat ------------------------------------------------------------------


def test_info(capsys: pytest.CaptureFixture[str], sample: Sample) -> None:
    path, model = sample
    code, out, _ = run(capsys, "info", path)
    assert code == 0 and "torn tail  none" in out
    code, data = run_json(capsys, "info", path)
    assert code == 0
    assert data["sessions_by_state"] == {"active": 1, "ended": 2, "archived": 0}
    assert data["actions"] == sum(len(m.actions) for m in model.values())
    assert data["size"] == path.stat().st_size and data["tail_bytes"] == 0
    assert (data["bytes_live"] + data["bytes_toc"] + data["bytes_dead"] + FILE_HEADER.size
            == data["committed_bytes"])


def test_ls_filters(capsys: pytest.CaptureFixture[str], sample: Sample) -> None:
    path, model = sample
    code, rows = run_json(capsys, "ls", path)
    assert code == 0
    assert [r["name"] for r in rows] == [m.name for m in model.values()]
    assert [r["action_count"] for r in rows] == [len(m.actions) for m in model.values()]
    _, active = run_json(capsys, "ls", path, "--state", "active")
    assert [r["name"] for r in active] == ["session-2"]
    _, named = run_json(capsys, "ls", path, "--name", "session-[01]", "--regex")
    assert [r["name"] for r in named] == ["session-0", "session-1"]
    code, out, _ = run(capsys, "ls", path, "--state", "archived")
    assert (code, out) == (0, "no sessions\n")
    code, out, _ = run(capsys, "ls", path)
    assert "session-1" in out.splitlines()[2] and "failed" in out


def test_show(capsys: pytest.CaptureFixture[str], sample: Sample) -> None:
    path, model = sample
    sid, m = next(iter(model.items()))
    code, out, _ = run(capsys, "show", path, "session-0")
    assert code == 0 and str(sid) in out and "checkpoints" in out
    assert len([line for line in out.splitlines() if line.strip().split(" ")[0].isdigit()]) >= len(m.actions)
    code, data = run_json(capsys, "show", path, str(sid)[:8], "--from", 5, "--to", 9)
    assert code == 0
    assert [a["seq"] for a in data["actions"]] == [5, 6, 7, 8, 9]
    assert [a["kind"] for a in data["actions"]] == [a.kind for a in m.actions[5:10]]
    assert [c["at_seq"] for c in data["checkpoints"]] == [c[1] for c in m.checkpoints]
    kind = m.actions[0].kind
    code, out, _ = run(capsys, "show", path, "session-0", "--kind", kind, "--jsonl")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [x["seq"] for x in lines] == [i for i, a in enumerate(m.actions) if a.kind == kind]
    for x in lines:
        want = m.actions[x["seq"]].payload
        if isinstance(want, bytes):
            assert x["payload_type"] == "bytes"
        else:
            assert x["payload"] == want
    code, out, _ = run(capsys, "show", path, "session-0", "--payload", "--to", 2)
    assert code == 0 and "#2" in out


def test_cat(capsys: pytest.CaptureFixture[str], sample: Sample) -> None:
    path, model = sample
    m = next(iter(model.values()))
    seq = next(i for i, a in enumerate(m.actions) if isinstance(a.payload, dict) and a.result)
    code, data = run_json(capsys, "cat", path, "session-0", seq)
    assert code == 0 and data["payload"] == m.actions[seq].payload
    assert data["result"] == m.actions[seq].result
    code, out, _ = run(capsys, "cat", path, "session-0", seq)
    assert code == 0 and "--- result" in out
    assert json.loads(out.split("--- payload")[1].split("\n", 1)[1].split("\n\n--- result")[0]) == \
        m.actions[seq].payload
    code, _, err = run(capsys, "cat", path, "session-0", 10_000)
    assert code == 2 and "no action" in err
    code, _, err = run(capsys, "cat", path, "no-such-session", 0)
    assert code == 2 and "no session" in err


# --- diff, replay, search ------------------------------------------------------------------


def test_diff(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "twins.mseg"
    with memseg.open(path, "a") as store:
        for name in ("a", "b", "c"):
            rec = store.start_session(name)
            for i in range(5):
                rec.record("step", {"i": i}, result="ok")
            if name == "c":
                rec.record("step", {"i": 99})
            rec.end()
    code, out, _ = run(capsys, "diff", path, "a", "b")
    assert code == 0 and "same" in out
    code, data = run_json(capsys, "diff", path, "a", "c")
    assert code == 1 and data["differing"] == 1
    assert data["differences"][0]["seq"] == 5 and data["differences"][0]["parts"] == ["missing"]
    code, _, err = run(capsys, "diff", path, "a", "zzz")
    assert code == 2 and "no session" in err


def test_replay_streams_in_order(capsys: pytest.CaptureFixture[str], sample: Sample) -> None:
    path, model = sample
    m = list(model.values())[1]
    code, out, _ = run(capsys, "replay", path, "session-1", "--jsonl", "--speed", 1e9)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["seq"] for r in rows] == list(range(len(m.actions)))
    assert [r["ts_ns"] for r in rows] == [a.ts_ns for a in m.actions]
    code, out, _ = run(capsys, "replay", path, "session-1")
    assert code == 0 and len([ln for ln in out.splitlines() if "#" in ln]) == len(m.actions)


def test_search(capsys: pytest.CaptureFixture[str], demo: Path) -> None:
    code, out, _ = run(capsys, "search", demo, "pytest")
    assert code == 0 and "fix-short-header" in out
    code, data = run_json(capsys, "search", demo, r"exit_code.:\s*1", "-E", "--results",
                          "--kind", "tool_call")
    assert code == 0
    assert {(h["session_name"], h["part"]) for h in data["hits"]} == {
        ("fix-short-header", "result"), ("rename-flags", "result")}
    _, data = run_json(capsys, "search", demo, "PYTEST", "-i", "--session", "rename-flags")
    assert {h["session_name"] for h in data["hits"]} == {"rename-flags"}
    code, _, err = run(capsys, "search", demo, "no such text")
    assert code == 1 and "no match" in err
    code, _, _ = run(capsys, "search", demo, "(unclosed", "--regex")
    assert code == 2


# --- verify, scan, salvage ------------------------------------------------------------------


def test_verify_and_scan(capsys: pytest.CaptureFixture[str], sample: Sample, tmp_path: Path) -> None:
    path, _ = sample
    code, out, _ = run(capsys, "verify", path)
    assert code == 0 and "OK" in out
    code, records = run_json(capsys, "scan", path)
    assert code == 0 and records[0]["offset"] == FILE_HEADER.size
    assert {r["status"] for r in records} == {"ok"}
    cut = tmp_path / "cut.mseg"
    cut.write_bytes(path.read_bytes()[:-7])
    code, data = run_json(capsys, "verify", cut)
    assert code == 0 and [n["reason"] for n in data["notes"]] == ["torn_tail"]
    code, torn = run_json(capsys, "scan", cut, "--damaged")
    assert code == 0 and [r["status"] for r in torn] == ["torn"]
    raw = bytearray(path.read_bytes())
    at = records[3]["offset"] + 40
    raw[at] ^= 1
    cut.write_bytes(bytes(raw))
    code, data = run_json(capsys, "verify", cut)
    assert code == 1 and data["ok"] is False
    assert all(p["offset"] <= at for p in data["problems"][:1])
    code, bad = run_json(capsys, "scan", cut, "--damaged")
    assert code == 1 and [r["offset"] for r in bad] == [records[3]["offset"]]


def test_scan_exits_1_on_a_damaged_file_header(capsys: pytest.CaptureFixture[str], sample: Sample,
                                               tmp_path: Path) -> None:
    damaged = with_damaged_header(sample[0], tmp_path / "hdr.mseg")
    code, bad = run_json(capsys, "scan", damaged, "--damaged")
    assert code == 1
    assert [(r["offset"], r["status"], r["reason"]) for r in bad] == [
        (0, "gap", "file_header:header_crc")]


def test_salvage(capsys: pytest.CaptureFixture[str], sample: Sample, tmp_path: Path) -> None:
    path, model = sample
    code, out, _ = run(capsys, "salvage", path, tmp_path / "a.mseg")
    assert code == 0 and "complete" in out
    assert stored_actions(tmp_path / "a.mseg") == stored_actions(path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0x10
    src = tmp_path / "damaged.mseg"
    src.write_bytes(bytes(raw))
    code, report = run_json(capsys, "salvage", src, tmp_path / "b.mseg")
    assert code == 1 and report["complete"] is False and report["damaged"]
    assert {s["session_id"] for s in report["sessions"]} == {str(k) for k in model}
    code, _, err = run(capsys, "salvage", src, tmp_path / "b.mseg")
    assert code == 2 and "exists" in err


# --- maintenance ---------------------------------------------------------------------------


def test_archive_compact_export_import_sweep(capsys: pytest.CaptureFixture[str], sample: Sample,
                                            tmp_path: Path) -> None:
    path = tmp_path / "work.mseg"
    shutil.copyfile(sample[0], path)
    code, out, _ = run(capsys, "archive", path, "session-0")
    assert code == 0 and "archived 1" in out
    _, rows = run_json(capsys, "ls", path, "--state", "archived")
    assert [r["name"] for r in rows] == ["session-0"]
    code, data = run_json(capsys, "unarchive", path, "session-0")
    assert code == 0 and data["unarchived"] == 1
    run(capsys, "archive", path, "session-0")
    size_before = path.stat().st_size
    code, report = run_json(capsys, "compact", path)
    assert code == 0 and report["bytes_before"] == size_before
    assert path.stat().st_size == report["bytes_after"] < size_before
    _, rows = run_json(capsys, "ls", path)
    assert [r["name"] for r in rows] == ["session-1", "session-2"]
    code, data = run_json(capsys, "export", path, tmp_path / "out.mseg", "session-1")
    assert code == 0 and data["copied"] == 1
    code, data = run_json(capsys, "import", tmp_path / "new.mseg", tmp_path / "out.mseg")
    assert code == 0 and data["copied"] == 1
    assert stored_actions(tmp_path / "new.mseg") == {
        k: v for k, v in stored_actions(path).items() if k in stored_actions(tmp_path / "out.mseg")}
    before = file_state(path)
    code, data = run_json(capsys, "sweep", path, "--days", 0, "--dry-run")
    assert code == 0 and data["dry_run"] is True
    assert [i["name"] for i in data["archived"]] == ["session-1"]
    assert file_state(path) == before
    code, _, _ = run(capsys, "compact", tmp_path / "missing.mseg")
    assert code == 2 and not (tmp_path / "missing.mseg").exists()


def test_copies_into_the_same_file_by_another_name_and_odd_day_counts_are_usage_errors(
        capsys: pytest.CaptureFixture[str], sample: Sample, tmp_path: Path) -> None:
    path = tmp_path / "work.mseg"
    shutil.copyfile(sample[0], path)
    alias = tmp_path / "alias.mseg"
    alias.symlink_to(path)
    before = file_state(path)
    for argv in (["export", path, alias], ["import", alias, path],
                 ["sweep", path, "--days", 0, "--archive-to", alias],
                 ["sweep", path, "--days", 0, "--archive-to", alias, "--dry-run"],
                 ["sweep", path, "--days", "nan"]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "Traceback" not in err, argv
    assert file_state(path) == before
    code, data = run_json(capsys, "sweep", path, "--days", "inf")
    assert code == 0 and data["archived"] == []


# --- the forensic promises ---------------------------------------------------------------


READ_ONLY: list[list[Any]] = [
    ["info"], ["ls"], ["show", "session-1"], ["show", "session-1", "--jsonl"], ["cat", "session-1", 3],
    ["diff", "session-0", "session-1"], ["replay", "session-2"], ["search", "fix"], ["verify"],
    ["scan"],
]


def test_reading_commands_never_touch_the_file(capsys: pytest.CaptureFixture[str], sample: Sample,
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = sample
    assert path.stat().st_mode & 0o777 == 0o444
    before = file_state(path)
    opened: list[int] = []
    real_open = os.open

    def spy_open(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(file, flags, *args, **kwargs)
        if os.path.samefile(f"/proc/self/fd/{fd}", path):
            opened.append(flags)
        return fd

    def no_lock(*_args: object) -> None:
        raise AssertionError("a reading command took a lock")

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(fcntl, "flock", no_lock)
    for argv in READ_ONLY:
        code, _, err = run(capsys, argv[0], path, *argv[1:])
        assert code in (0, 1), (argv, err)
    monkeypatch.undo()
    assert len(opened) >= len(READ_ONLY)
    assert all(f & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC) == 0 for f in opened)
    code, _, _ = run(capsys, "salvage", path, tmp_path / "copy.mseg")
    assert code == 0
    assert file_state(path) == before


def test_reading_commands_survive_any_cut_or_damage(capsys: pytest.CaptureFixture[str], sample: Sample,
                                                    tmp_path: Path) -> None:
    path, _ = sample
    data = path.read_bytes()
    rng = random.Random(11)
    victims: list[bytes] = [data[: rng.randrange(0, len(data))] for _ in range(8)]
    for _ in range(8):
        raw = bytearray(data)
        for _ in range(rng.randrange(1, 6)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        victims.append(bytes(raw))
    target = tmp_path / "victim.mseg"
    for n, victim in enumerate(victims):
        target.write_bytes(victim)
        for argv in [*READ_ONLY, ["show", "session-0"], ["cat", "session-0", 1]]:
            code, _, err = run(capsys, argv[0], target, *argv[1:])
            # Reports (0/1), or a clean refusal (2) with a message; never a traceback.
            assert code in (0, 1, 2), (n, argv)
            if code == 2 and "--jsonl" in argv:
                assert json.loads(err)["message"], (n, argv, err)
            else:
                assert code != 2 or err.startswith("memseg: "), (n, argv, err)
        code, _, err = run(capsys, "salvage", target, tmp_path / f"out{n}.mseg")
        assert code in (0, 1, 2) and (code != 2 or err.startswith("memseg: "))


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], demo: Path) -> None:
    assert run(capsys)[0] == 2
    assert run(capsys, "show", demo)[0] == 2
    assert run(capsys, "cat", demo, "fix-short-header", "not-a-number")[0] == 2
    assert run(capsys, "replay", demo, "fix-short-header", "--speed", -1)[0] == 2


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_colour_and_a_progress_bar(demo: Path) -> None:
    out, err = _Tty(), _Tty()
    assert main(["verify", str(demo)], stdout=out, stderr=err) == 0
    assert "\x1b[" in out.getvalue()
    assert "verifying" in err.getvalue() and "\r" in err.getvalue()
    plain = io.StringIO()
    assert main(["verify", str(demo)], stdout=plain, stderr=io.StringIO()) == 0
    assert "\x1b[" not in plain.getvalue()


def test_show_search_replay_skip_a_damaged_block(capsys: pytest.CaptureFixture[str], demo: Path,
                                                 tmp_path: Path) -> None:
    first = next(r for r in memseg.scan(demo) if r.kind == "BLOCK")
    with memseg.open(demo) as store:
        session = store.session("fix-short-header")
        assert session.actions.refs["offset"][0] == first.offset
        lost = int(session.actions.refs["actions"][0])
        total = len(session.actions)
    raw = bytearray(demo.read_bytes())
    raw[first.offset + first.length // 2] ^= 0xFF  # inside the compressed payloads
    target = tmp_path / "damaged.mseg"
    target.write_bytes(bytes(raw))
    code, out, _ = run(capsys, "show", target, "fix-short-header")
    assert code == 1 and f"actions 0..{lost - 1} unreadable" in out
    code, out, err = run(capsys, "show", target, "fix-short-header", "--jsonl")
    assert code == 1 and [json.loads(x)["seq"] for x in out.splitlines()] == list(range(lost, total))
    assert "unreadable" in err
    code, out, err = run(capsys, "replay", target, "fix-short-header", "--jsonl")
    assert code == 1 and len(out.splitlines()) == total - lost
    code, data = run_json(capsys, "search", target, "pytest")
    assert code == 1 and data["damaged_blocks"] == 1 and data["count"] > 0


def test_directories_and_fifos_are_refused_without_blocking(capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for target in (tmp_path, fifo):
        for command in ("info", "ls", "verify", "scan"):
            code, _, err = run(capsys, command, target)
            assert code == 2 and "not a regular file" in err


# --- how errors are reported ---------------------------------------------------------------


def _damaged_demo(demo: Path, tmp_path: Path) -> Path:
    """A copy of the demo whose first block's payloads are damaged."""
    first = next(r for r in memseg.scan(demo) if r.kind == "BLOCK")
    raw = bytearray(demo.read_bytes())
    raw[first.offset + first.length // 2] ^= 0xFF
    target = tmp_path / "damaged.mseg"
    target.write_bytes(bytes(raw))
    return target


def _json_lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines()]


def test_archiving_an_active_session_is_a_state_error_with_a_command_line_hint(
        capsys: pytest.CaptureFixture[str], demo: Path, tmp_path: Path) -> None:
    path = tmp_path / "work.mseg"
    shutil.copyfile(demo, path)
    path.chmod(0o644)
    code, _, err = run(capsys, "archive", path, "profile-importer")
    assert code == 2
    assert err.startswith(f"memseg: {path}: wrong session state: active")
    assert "damaged" not in err and "resume()" not in err
    assert f"memseg end {path} " in err and "(expected 'ended', found 'active')" in err
    code, out, _ = run(capsys, "end", path, "profile-importer", "--status", "abandoned")
    assert code == 0 and "ended 1" in out
    code, out, _ = run(capsys, "archive", path, "profile-importer")
    assert code == 0 and "archived 1" in out
    code, _, err = run(capsys, "end", path, "profile-importer")
    assert code == 2 and "wrong session state: not_active" in err


def test_damage_is_labelled_damaged_data_with_reason_and_offset(
        capsys: pytest.CaptureFixture[str], demo: Path, tmp_path: Path) -> None:
    target = _damaged_demo(demo, tmp_path)
    code, _, err = run(capsys, "cat", target, "fix-short-header", 0)
    assert code == 1 and err.startswith(f"memseg: {target}: damaged data: ")
    assert " at offset " in err
    code, _, err = run(capsys, "cat", target, "fix-short-header", 0, "--json")
    record = json.loads(err)
    assert code == 1 and record["error"] == "CorruptError" and record["category"] == "damaged data"
    assert record["file"] == str(target) and record["reason"] and record["offset"] >= FILE_HEADER.size


def test_json_errors_are_json_objects_on_stderr(capsys: pytest.CaptureFixture[str], demo: Path,
                                               tmp_path: Path) -> None:
    path = tmp_path / "work.mseg"
    shutil.copyfile(demo, path)
    code, out, err = run(capsys, "archive", path, "profile-importer", "--json")
    record = json.loads(err)
    assert (code, out) == (2, "")
    assert {k: record[k] for k in ("error", "reason", "expected", "actual", "offset", "file")} == {
        "error": "StateError", "reason": "active", "expected": "ended", "actual": "active",
        "offset": None, "file": str(path)}
    assert record["message"].startswith("active: session ")
    text = tmp_path / "text.txt"
    text.write_text("not a memseg file\n")
    code, _, err = run(capsys, "info", text, "--json")
    record = json.loads(err)
    assert code == 2 and record["error"] == "NotMemsegError" and record["reason"] == "bad_magic"
    assert record["offset"] == 0 and record["category"] == "not a memseg file"
    code, _, err = run(capsys, "ls", tmp_path / "missing.mseg", "--json")
    record = json.loads(err)
    assert code == 2 and record["error"] == "FileNotFoundError" and record["reason"] == "ENOENT"
    code, _, err = run(capsys, "show", demo, "no-such-session", "--jsonl")
    assert code == 2 and json.loads(err)["error"] == "UsageError"
    code, _, err = run(capsys, "ls", demo, "--state", "lost", "--json")
    assert code == 2 and json.loads(err)["category"] == "usage"


def test_json_warnings_about_damage_are_json_lines(capsys: pytest.CaptureFixture[str], demo: Path,
                                                   tmp_path: Path) -> None:
    target = _damaged_demo(demo, tmp_path)
    code, _, err = run(capsys, "search", target, "pytest", "--json")
    assert code == 1 and [r["error"] for r in _json_lines(err)] == ["CorruptError"]
    code, _, err = run(capsys, "show", target, "fix-short-header", "--jsonl")
    assert code == 1 and "unreadable" in _json_lines(err)[0]["message"]


def test_every_error_about_a_file_names_it(capsys: pytest.CaptureFixture[str], demo: Path,
                                          tmp_path: Path) -> None:
    empty = tmp_path / "empty.mseg"
    empty.write_bytes(b"")
    code, _, err = run(capsys, "salvage", empty, tmp_path / "x.mseg")
    assert code == 2 and err.startswith(f"memseg: {empty}: not a memseg file: bad_magic")
    text = tmp_path / "text.txt"
    text.write_text("hello\n")
    for argv in (["export", demo, text], ["sweep", tmp_path / "work.mseg", "--days", 0,
                                          "--archive-to", text]):
        shutil.copyfile(demo, tmp_path / "work.mseg")
        (tmp_path / "work.mseg").chmod(0o644)
        code, _, err = run(capsys, *argv)
        assert code == 2 and err.startswith(f"memseg: {text}: not a memseg file"), argv
    code, _, err = run(capsys, "import", tmp_path / "new.mseg", text)
    assert code == 2 and err.startswith(f"memseg: {text}: not a memseg file")
    code, _, err = run(capsys, "salvage", demo, text)
    assert code == 2 and err.startswith(f"memseg: {text}: ") and "exists" in err


# --- info's byte accounting, search's exit status, the demo ---------------------------------


def test_a_compacted_file_has_no_dead_bytes(capsys: pytest.CaptureFixture[str], sample: Sample,
                                           tmp_path: Path) -> None:
    path = tmp_path / "work.mseg"
    shutil.copyfile(sample[0], path)
    run(capsys, "archive", path, "session-0")
    _, before = run_json(capsys, "info", path)
    assert before["bytes_dead"] > 0 and before["bytes_archived"] > 0
    run(capsys, "compact", path)
    code, data = run_json(capsys, "info", path)
    assert code == 0 and data["bytes_dead"] == 0 and data["bytes_toc"] > 0
    assert (data["bytes_live"] + data["bytes_toc"] + FILE_HEADER.size
            == data["committed_bytes"] == path.stat().st_size)
    code, out, _ = run(capsys, "info", path)
    assert code == 0 and "dead 0 B" in out


def test_search_that_skipped_damage_exits_1(capsys: pytest.CaptureFixture[str], demo: Path,
                                            tmp_path: Path) -> None:
    target = _damaged_demo(demo, tmp_path)
    code, out, err = run(capsys, "search", target, "pytest")
    assert code == 1 and "rename-flags" in out and "skipped a damaged block" in err
    assert run(capsys, "search", demo, "pytest")[0] == 0
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    assert "damaged block" in capsys.readouterr().out


def test_demo_refuses_an_existing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "demo.mseg"
    assert run(capsys, "demo", path)[0] == 0
    before = path.read_bytes()
    code, _, err = run(capsys, "demo", path)
    assert code == 2 and err.startswith(f"memseg: {path}: ") and "new file" in err
    assert path.read_bytes() == before
    assert run(capsys, "show", path, "fix-short-header")[0] == 0


def test_readme_python_examples_run_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    # The first alone, as a newcomer tries it, then each in turn, as the README reads.
    for run_blocks in (blocks[:1], blocks[:1], blocks, blocks):
        namespace: dict[str, Any] = {}
        for block in run_blocks:
            exec(compile(block, "README.md", "exec"), namespace)
    assert "KeyError" in readme and "asking for the id" in readme


def test_sweep_dry_run_neither_locks_nor_cuts_a_torn_tail(capsys: pytest.CaptureFixture[str],
                                                          sample: Sample, tmp_path: Path) -> None:
    """The dry run opened the file for writing: it cut a torn tail, and failed while
    another process held the writer's lock."""
    path = tmp_path / "work.mseg"
    shutil.copyfile(sample[0], path)
    with open(path, "ab") as f:
        f.write(b"torn tail of a writer that died")
    before = path.read_bytes()
    code, data = run_json(capsys, "sweep", path, "--days", 0, "--dry-run")
    assert code == 0 and data["dry_run"] is True and data["archived"]
    assert path.read_bytes() == before
    with memseg.open(path, "a"):  # a writer holds the lock
        code, data = run_json(capsys, "sweep", path, "--days", 0, "--dry-run")
        assert code == 0 and data["archived"]


def test_search_takes_a_pattern_that_is_not_utf8_as_bytes(tmp_path: Path) -> None:
    path = tmp_path / "s.mseg"
    with memseg.open(path, "a") as store, store.start_session(name="bin") as rec:
        rec.record("blob", b"\x00\xff\xfe")
    found = subprocess.run([sys.executable, "-m", "memseg", "search", str(path), b"\xff\xfe",
                            "--json"], capture_output=True, timeout=120, check=False)
    assert found.returncode == 0, found.stderr.decode()
    assert json.loads(found.stdout)["count"] == 1


# --- arguments and files the command line once mishandled (a review of the CLI) -----


def test_a_file_name_that_is_not_utf8_is_reported_in_json(tmp_path: Path) -> None:
    name = os.fsencode(tmp_path) + b"/store\xff.mseg"
    record_demo(os.fsdecode(name))
    for argv, code in (([b"info", name], 0), ([b"verify", name], 0),
                       ([b"info", name + b".missing"], 2)):
        done = subprocess.run([sys.executable.encode(), b"-m", b"memseg", *argv, b"--json"],
                              capture_output=True, timeout=120, check=False)
        assert done.returncode == code, done.stderr
        report = json.loads(done.stdout if code == 0 else done.stderr)
        named = report.get("path") or report.get("file")  # a report's, or an error's
        # JSON's own escape (\udcff): decoded, the name's exact bytes come back.
        assert os.fsencode(named) == name + (b".missing" if code else b""), report


def test_human_output_survives_a_terminal_that_is_not_utf8(demo: Path) -> None:
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    done = subprocess.run([sys.executable, "-m", "memseg", "show", str(demo), "fix-short-header"],
                          capture_output=True, timeout=120, check=False, env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert b"\\u2026" in done.stdout  # the preview's cut mark, as an escape


def test_a_name_that_starts_another_sessions_id_is_ambiguous(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "s.mseg"
    with memseg.open(path, "a") as store:
        with store.start_session(name="real") as rec:
            rec.record("k", "real")
        real = rec.id
        with store.start_session(name=real.hex[:8]) as rec:  # a decoy named after its id
            rec.record("k", "decoy")
        decoy = rec.id
    code, _, err = run(capsys, "cat", path, str(real)[:8], 0)
    assert code == 2 and "give the full id" in err
    code, out, _ = run(capsys, "cat", path, str(real), 0)
    assert code == 0 and "real" in out
    code, out, _ = run(capsys, "cat", path, str(decoy)[:8], 0)  # its own id prefix is fine
    assert code == 0 and "decoy" in out
    code, out, _ = run(capsys, "cat", path, real.hex[:12], 0)  # a prefix without hyphens
    assert code == 0 and "real" in out


@pytest.mark.parametrize("argv", [
    ["ls", "{f}", "--regex", "--name", "a{99999999999}"],
    ["search", "{f}", "--regex", "a{4294967295}"],
    ["search", "{f}", "--regex", "(" * 1000 + "a" + ")" * 1000],
    ["replay", "{f}", "fix-short-header", "--speed", "10", "--max-wait", "-1"],
    ["replay", "{f}", "fix-short-header", "--speed", "nan"],
    ["sweep", "{f}", "--days", "1", "--max-archive-bytes", "100"],
    ["sweep", "{f}", "--days", "1", "--archive-to", "{f}.old", "--max-archive-bytes", "-1"],
])
def test_bad_arguments_are_usage_errors_not_tracebacks(
        capsys: pytest.CaptureFixture[str], demo: Path, argv: list[str]) -> None:
    code, _, err = run(capsys, *[a.replace("{f}", str(demo)) for a in argv])
    assert code == 2 and err.startswith("memseg: ") and "Traceback" not in err


def test_maintenance_commands_refuse_an_empty_file(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path) -> None:
    empty = tmp_path / "empty.mseg"
    empty.touch()
    for argv in (["compact", empty], ["sweep", empty, "--days", "30"],
                 ["archive", empty, "x"], ["end", empty, "x"]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "not a memseg file" in err, (argv, err)
        assert empty.stat().st_size == 0


def test_fifos_are_refused_by_import_and_sweep_and_by_the_library(
        capsys: pytest.CaptureFixture[str], demo: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    store = tmp_path / "s.mseg"
    shutil.copy(demo, store)
    store.chmod(0o644)
    for argv in (["import", store, fifo], ["sweep", store, "--days", "0", "--dry-run",
                                           "--archive-to", fifo]):
        code, _, err = run(capsys, *argv)  # would block forever on open()
        assert code == 2 and f"{fifo}: not a regular file" in err, err
    for mode in ("r", "a"):
        with pytest.raises(OSError, match="not a regular file"):
            memseg.open(fifo, mode)


def test_archiving_a_session_named_twice_counts_it_once(capsys: pytest.CaptureFixture[str],
                                                        demo: Path, tmp_path: Path) -> None:
    store = tmp_path / "s.mseg"
    shutil.copy(demo, store)
    store.chmod(0o644)
    code, out, _ = run(capsys, "archive", store, "fix-short-header", "fix-short-header")
    assert code == 0 and "archived 1 of 1 session" in out


def test_json_stays_valid_json_on_a_terminal_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "s.mseg"
    with memseg.open(path, "a") as store, store.start_session(name="café 😀") as rec:
        rec.record("k", "v")
    for encoding in ("ascii", "latin-1"):
        env = {**os.environ, "PYTHONIOENCODING": encoding}
        done = subprocess.run([sys.executable, "-m", "memseg", "ls", str(path), "--json"],
                              capture_output=True, timeout=120, check=False, env=env)
        assert done.returncode == 0, done.stderr.decode()
        assert json.loads(done.stdout)[0]["name"] == "café 😀"


def test_main_with_one_stream_given_tolerates_the_other(tmp_path: Path) -> None:
    name = os.fsencode(tmp_path) + b"/ps\xff.mseg"
    record_demo(os.fsdecode(name))
    script = ("import io, os, sys; from memseg.cli import main; "
              "path = os.fsdecode(sys.argv[1].encode('utf-8', 'surrogateescape')); "
              "code = main(['verify', path], stdout=sys.stdout, stderr=io.StringIO()); "
              "sys.exit(code or main(['verify', path], stderr=io.StringIO()))")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    done = subprocess.run([sys.executable.encode(), b"-c", script.encode(), name],
                          capture_output=True, timeout=120, check=False, env=env)
    assert done.returncode == 0 and b"OK" in done.stdout, done.stderr.decode()


def test_import_names_the_source_that_is_empty(capsys: pytest.CaptureFixture[str],
                                               demo: Path, tmp_path: Path) -> None:
    empty, dest = tmp_path / "empty.mseg", tmp_path / "dest.mseg"
    empty.touch()
    code, _, err = run(capsys, "import", dest, empty)
    assert code == 2 and err.startswith(f"memseg: {empty}: not a memseg file"), err
    assert not dest.exists()


def test_export_lists_a_session_named_twice_once(capsys: pytest.CaptureFixture[str],
                                                 demo: Path, tmp_path: Path) -> None:
    dest = tmp_path / "old.mseg"
    code, report = run_json(capsys, "export", demo, dest, "fix-short-header", "fix-short-header")
    assert code == 0 and report["copied"] == 1 and len(report["sessions"]) == 1


def test_replay_without_a_wait_cap_waits_what_sleep_can_count(
        capsys: pytest.CaptureFixture[str], demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr("memseg.cli_read.time.sleep", waits.append)
    code, _, err = run(capsys, "replay", demo, "fix-short-header", "--speed", "1e-300",
                       "--max-wait", "inf")
    assert code == 0, err
    assert waits and max(waits) == 7 * 86400.0  # a gap of 1e300 s, capped at a week


def test_json_escapes_non_utf8_names_wherever_they_sit() -> None:
    @dataclasses.dataclass
    class Report:
        path: str

    name = os.fsdecode(b"a\xff.mseg")
    for obj in ({"r": Report(name)}, [Report(name)], {"names": frozenset([name])},
                {name: (name, b"\x00")}):
        data = to_json(obj, indent=False)
        assert b"\\udcff" in data and b"\xee\x80\x80" not in data  # no marker left
        assert name in json.dumps(json.loads(data), ensure_ascii=False)


def test_json_keeps_utf8_for_a_stream_that_names_utf8_its_own_way() -> None:
    class Stream(io.StringIO):
        def __init__(self, encoding: str) -> None:
            super().__init__()
            self._encoding = encoding

        @property
        def encoding(self) -> str:  # type: ignore[override]
            return self._encoding

    for encoding, raw in (("utf_8", True), ("U8", True), ("UTF-8", True), ("cp1252", False)):
        stream = Stream(encoding)
        Out(stream).json({"name": "café"})
        assert ("café" in stream.getvalue()) is raw, encoding
        assert json.loads(stream.getvalue())["name"] == "café"


def test_a_callers_own_streams_are_left_as_they_were(demo: Path) -> None:
    out, err = (io.TextIOWrapper(io.BytesIO(), encoding="utf-8") for _ in range(2))
    assert main(["info", str(demo)], stdout=out, stderr=err) == 0
    assert (out.errors, err.errors) == ("strict", "strict")
