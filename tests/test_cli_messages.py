"""What the command line tells a newcomer: times, hints and wording that read right.

Each test holds an input that a new user's walk through the README found confusing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

import memseg
from memseg.cli import build_parser, main

_S = 1_000_000_000


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """A command's --help, its lines joined as argparse wrapped them."""
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def _at(out: str) -> dict[int, str]:
    """The AT column of `show`'s action table, by seq."""
    rows = [line.split() for line in out.splitlines()]
    return {int(r[0]): r[1] for r in rows if len(r) > 2 and r[0].isdigit() and r[1][0] in "+-"}


@pytest.fixture
def timed(tmp_path: Path) -> Path:
    """Session "timed": actions 100.5 s, 101.5 s, ... after its creation, kinds alternating
    "even"/"odd"; session "early": two actions stamped 3.5 s and 1 s before it was created."""
    path = tmp_path / "timed.mseg"
    with memseg.open(path, "a") as store:
        before = time.time_ns()
        with store.start_session("timed") as rec:
            for i in range(6):
                rec.record("odd" if i % 2 else "even", {"i": i}, ts_ns=before + 100 * _S + _S // 2 + i * _S)
        with store.start_session("early") as rec:
            rec.record("note", "stamped by the caller", ts_ns=before - 3 * _S - _S // 2)
            rec.record("note", "and another", ts_ns=before - _S)
    return path


def test_show_times_count_from_the_first_action_whatever_the_filter(
        capsys: pytest.CaptureFixture[str], timed: Path) -> None:
    want = {0: "+0ms"} | {i: f"+{i:.1f}s" for i in range(1, 6)}
    code, out, _ = run(capsys, "show", timed, "timed")
    assert code == 0 and _at(out) == want
    for argv in (["--from", 2, "--to", 4], ["--kind", "odd"], ["--kind", "odd", "--from", 3]):
        code, out, _ = run(capsys, "show", timed, "timed", *argv)
        shown = _at(out)
        assert code == 0 and shown and shown == {i: want[i] for i in shown}, argv
    code, out, _ = run(capsys, "show", timed, "timed", "--from", 3, "--payload")
    assert "#3  +3.0s  odd" in out
    code, out, _ = run(capsys, "replay", timed, "timed")
    assert code == 0 and out.split()[:2] == ["+0ms", "#0"]
    # A caller's timestamp before the session was created changes nothing.
    code, out, _ = run(capsys, "show", timed, "early")
    assert code == 0 and _at(out) == {0: "+0ms", 1: "+2.5s"}
    assert "since the session's first action" in _help(capsys, "show")


def _readme_error_keys() -> list[str]:
    """The keys README.md lists for a --json error, in its order."""
    text = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    listed = text.split("reports an error as a JSON object on stderr (", 1)[1].split(";", 1)[0]
    return re.findall(r"`(\w+)`", listed)


def test_json_errors_name_the_file_a_session_was_looked_up_in(
        capsys: pytest.CaptureFixture[str], timed: Path, tmp_path: Path) -> None:
    with memseg.open(timed, "a") as store:
        store.start_session("twin").end()
        store.start_session("twin").end()
    for argv in (["show", timed, "nope"], ["replay", timed, "nope"], ["diff", timed, "timed", "nope"],
                 ["search", timed, "x", "--session", "nope"], ["cat", timed, "twin", 0],
                 ["archive", timed, "nope"], ["export", timed, tmp_path / "out.mseg", "nope"],
                 ["cat", timed, "timed", 99]):
        code, _, err = run(capsys, *argv, "--json")
        record = json.loads(err)
        assert code == 2 and record["category"] == "usage", argv
        assert record["file"] == str(timed), argv
        assert list(record) == _readme_error_keys(), argv
        code, _, err = run(capsys, *argv)
        assert code == 2 and err.startswith(f"memseg: {timed}: "), argv


def test_error_messages_say_each_thing_once(capsys: pytest.CaptureFixture[str], timed: Path,
                                            tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("hello\n")
    code, _, err = run(capsys, "ls", text)
    assert code == 2 and err == (f"memseg: {text}: not a memseg file: bad_magic at offset 0 "
                                 "(expected b'MSEG\\r\\n\\x1a\\n', found b'hello\\n')\n")
    empty = tmp_path / "empty.mseg"
    empty.write_bytes(b"")
    code, _, err = run(capsys, "compact", empty)
    said = err.removeprefix(f"memseg: {empty}: ")
    assert code == 2 and said.startswith("not a memseg file: bad_magic at offset 0: ")
    assert said.count("not a memseg file") == 1 and "empty" in said
    with memseg.open(timed, "a"):  # the writer's lock, held
        code, _, err = run(capsys, "archive", timed, "timed")
        assert code == 2 and err == f"memseg: {timed}: file locked: held by another writer\n"
        code, _, err = run(capsys, "archive", timed, "timed", "--json")
        record = json.loads(err)
        assert record["reason"] == "locked" and str(timed.resolve()) in record["detail"]


def test_a_session_not_found_comes_with_hints(capsys: pytest.CaptureFixture[str], timed: Path,
                                              tmp_path: Path) -> None:
    with memseg.open(timed) as store:
        sid = next(i.id for i in store.sessions() if i.name == "timed")
    code, _, err = run(capsys, "show", timed, sid.hex[:3])
    assert code == 2 and err == (f"memseg: {timed}: no session {sid.hex[:3]!r} (an id prefix needs "
                                 f"at least 4 hex digits; `memseg ls {timed}` lists the sessions)\n")
    code, _, err = run(capsys, "show", timed, "timd")
    assert code == 2 and err.endswith("lists the sessions; did you mean 'timed'?)\n")
    code, _, err = run(capsys, "show", timed, "zzzzzz")
    assert code == 2 and "did you mean" not in err and "4 hex digits" not in err
    spaced = tmp_path / "my runs.mseg"
    timed.rename(spaced)
    code, _, err = run(capsys, "show", spaced, "erly")
    assert code == 2 and f"`memseg ls '{spaced}'`" in err and "did you mean 'early'?" in err


def test_diff_says_which_session_has_an_action_and_when_a_result_is_absent(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "twins.mseg"
    with memseg.open(path, "a") as store:
        with store.start_session("short") as rec:
            rec.record("step", {"i": 0}, result="ok")
        with store.start_session("long") as rec:
            rec.record("step", {"i": 0})
            rec.record("step", {"i": 1})
    code, out, _ = run(capsys, "diff", path, "short", "long")
    assert code == 1
    assert out.splitlines()[2:] == [
        "seq 0: result differs", "  a: step  {\"i\":0}", "     -> ok",
        "  b: step  {\"i\":0}", "     -> (no result)",
        "seq 1: only in b", "  a: (no action)", "  b: step  {\"i\":1}",
        "2 of 2 actions differ"]
    code, out, _ = run(capsys, "diff", path, "long", "short")
    assert "seq 1: only in a" in out.splitlines()
    code, data = _json_run(capsys, "diff", path, "long", "short")
    assert [d["parts"] for d in data["differences"]] == [["result"], ["missing"]]


def _json_run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, Any]:
    code, out, _ = run(capsys, *argv, "--json")
    return code, json.loads(out)


def test_cat_raw_writes_one_value_and_refuses_two(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    path = tmp_path / "cat.mseg"
    with memseg.open(path, "a") as store, store.start_session("s") as rec:
        rec.record("tool_call", b"\x00payload", result=b"\x01result")

    def raw(*argv: str) -> tuple[int, bytes]:
        written = io.BytesIO()
        out = io.TextIOWrapper(written, encoding="utf-8")  # as sys.stdout: text over bytes
        code = main(["cat", str(path), "s", "0", "--raw", *argv], stdout=out, stderr=io.StringIO())
        out.flush()
        return code, written.getvalue()

    assert raw() == (0, b"\x00payload")
    assert raw("--part", "payload") == (0, b"\x00payload")
    assert raw("--part", "result") == (0, b"\x01result")
    code, _, err = run(capsys, "cat", path, "s", 0, "--raw", "--part", "both")
    assert code == 2 and "--part payload or --part result" in err
    code, out, _ = run(capsys, "cat", path, "s", 0)
    assert code == 0 and "--- payload" in out and "--- result" in out
    assert "the payload, or the result with --part result" in _help(capsys, "cat")


def test_counts_of_one_are_singular(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "one.mseg"
    with memseg.open(path, "a") as store:
        with store.start_session("one") as rec:
            rec.record("k", {"i": 0}, result="ok")
            rec.checkpoint({"c": 1})
        with store.start_session("two") as rec:
            rec.record("k", {"i": 0}, result="no")
    code, out, _ = run(capsys, "diff", path, "one", "two")
    assert code == 1 and "(1 action)" in out and out.endswith("\n1 of 1 action differs\n")
    # The end of session one's first block is its checkpoint.
    block = next(r for r in memseg.scan(path) if r.kind == "BLOCK")
    raw = bytearray(path.read_bytes())
    raw[block.offset + block.length - 3] ^= 0xFF
    damaged = tmp_path / "damaged.mseg"
    damaged.write_bytes(bytes(raw))
    code, out, _ = run(capsys, "verify", damaged)
    assert code == 1 and out.rstrip().endswith(", 2 sessions, 1 action)")
    code, out, _ = run(capsys, "salvage", damaged, tmp_path / "out.mseg")
    assert "1 damaged block; 1 checkpoint lost" in out
    code, out, _ = run(capsys, "archive", path, "one")
    assert (code, out) == (0, "archived 1 of 1 session\n")
    code, out, _ = run(capsys, "sweep", path, "--days", 0, "--dry-run")
    assert out.startswith("would archive 1 session, ")


def test_show_says_when_a_range_holds_no_action(capsys: pytest.CaptureFixture[str],
                                                timed: Path) -> None:
    code, out, _ = run(capsys, "show", timed, "timed", "--from", 20)
    assert code == 0 and out.splitlines()[-1] == (
        "no action from seq 20 on (the session has 6 actions: seqs 0..5)")
    code, out, _ = run(capsys, "show", timed, "timed", "--kind", "none", "--from", 1, "--to", 3)
    assert code == 0 and out.splitlines()[-1].startswith("no action of kind none in seqs 1..3 (")
    assert "SEQ" not in out
    code, out, err = run(capsys, "show", timed, "timed", "--from", 5, "--to", 2)
    assert (code, out, err) == (2, "", "memseg: --from 5 is after --to 2\n")
    code, _, err = run(capsys, "show", timed, "timed", "--from", 5, "--to", 2, "--json")
    assert code == 2 and json.loads(err)["category"] == "usage"


def test_every_argument_of_every_command_has_help() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [(name, action.dest) for name, sub in commands.choices.items()
               for action in sub._actions if not action.help]
    assert missing == []
    cat = commands.choices["cat"].format_help()
    assert "counted from 0" in " ".join(cat.split())


def test_the_readme_names_every_peer_the_benchmarks_measure() -> None:
    root = Path(__file__).parents[1]
    head = next(line for line in (root / "BENCHMARKS.md").read_text().splitlines()
                if line.startswith("| operation | memseg |"))
    peers = [cell.strip() for cell in head.strip("|").split("|")[2:]]
    spelled = {"sqlite": "SQLite", "lmdb": "LMDB", "mcap": "MCAP", "jsonl-dir": "JSONL directories",
               "jsonl-gz": "gzip JSONL"}
    documents = next(line for line in (root / "README.md").read_text().splitlines()
                     if line.startswith("- [BENCHMARKS.md]"))
    assert peers and [p for p in peers if spelled[p] not in documents] == []


def test_a_misspelt_name_is_a_usage_error_even_beside_damaged_metadata(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.mseg"
    with memseg.open(path, "a") as store:
        with monkeypatch.context() as patch:  # metadata that is JSON but not an object
            patch.setattr("memseg.store.json_bytes", lambda obj: b"[1]")
            store.start_session("damaged-meta").end()
        with store.start_session("good") as rec:
            rec.record("k", 1)
    code, _, err = run(capsys, "show", path, "goood")
    # The hints cannot read every session's metadata; the answer is still "no such session".
    assert code == 2 and "no session 'goood'" in err
    code, out, _ = run(capsys, "show", path, "good")
    assert code == 0 and "good" in out


def test_show_refuses_a_negative_seq(capsys: pytest.CaptureFixture[str], timed: Path) -> None:
    for argv in (["--from", "-3", "--to", "-1"], ["--to", "-1"], ["--from", "x"]):
        code, _, err = run(capsys, "show", timed, "timed", *argv)
        assert code == 2 and ("0 or more" in err or "not a seq number" in err), (argv, err)


def test_cat_of_a_missing_result_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "r.mseg"
    with memseg.open(path, "a") as store, store.start_session("s") as rec:
        rec.record("k", b"p")  # no result
        rec.record("k", b"p", result=b"")  # an empty one
    for raw in (["--raw"], []):
        code, out, err = run(capsys, "cat", path, "s", 0, "--part", "result", *raw)
        assert code == 2 and out == "" and "has no result" in err, raw
        code, out, err = run(capsys, "cat", path, "s", 1, "--part", "result", *raw)
        assert code == 0 and err == "", raw


def test_show_times_count_from_the_first_action_even_when_its_payload_is_damaged(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "d.mseg"
    first = os.urandom(300)  # incompressible: stored as is, so it can be found and damaged
    with memseg.open(path, "a") as store, store.start_session("d") as rec:
        created = store.session("d").info.created_ns
        rec.record("k", first, ts_ns=created + _S)
        rec.flush()
        rec.record("k", b"later", ts_ns=created + 7 * _S + _S // 2)
    data = bytearray(path.read_bytes())
    blocks = [r.offset for r in memseg.scan(path) if r.kind == "BLOCK"]
    damaged = bytearray(data)
    damaged[damaged.index(first) + 10] ^= 0xFF  # the payload: its timestamp still reads
    path.write_bytes(bytes(damaged))
    code, out, _ = run(capsys, "show", path, "d")
    assert code == 1 and "blob_crc" in out  # the damaged block is reported...
    assert _at(out) == {1: "+6.5s"}  # ...and the rest still shows, timed from action 0
    damaged = bytearray(data)
    damaged[blocks[0] + 32 + 72] ^= 0xFF  # action 0's timestamp: the block's columns
    path.write_bytes(bytes(damaged))
    code, out, _ = run(capsys, "show", path, "d")
    assert code == 1 and "columns_crc" in out
    assert _at(out) == {1: "+7.5s"}  # no first action to count from: the creation stands in
