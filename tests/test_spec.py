"""SPEC.md tells the truth about the bytes: its tables are checked against memseg.format and the code.

Byte tables must match the structs field by field, every reason code the code raises must be
listed, the constants and enum values must agree, and the example hex dumps must be real files.
"""

from __future__ import annotations

import ast
import enum
import importlib
import re
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

import lz4.block
import numpy as np
import pytest

import memseg
from memseg import errors
from memseg import format as fmt
from memseg.codec import crc32c
from memseg.container import parse_file_header

ROOT = Path(__file__).resolve().parent.parent
SPEC_PATH = ROOT / "SPEC.md"
SOURCE_DIR = Path(memseg.__file__).resolve().parent

_LAYOUT = re.compile(r"^Layout `(\w+)`")
_ENUM = re.compile(r"^Enum `(\w+)`")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_STRUCT_ITEM = re.compile(r"(\d*)([xbBhHiIqQs])")
_STRUCT_TYPES = {"b": "i8", "B": "u8", "h": "i16", "H": "u16", "i": "i32", "I": "u32",
                 "q": "i64", "Q": "u64"}


# --- reading SPEC.md ----------------------------------------------------------


@pytest.fixture(scope="module")
def spec() -> str:
    return SPEC_PATH.read_text(encoding="utf-8")


def _cells(line: str) -> list[str]:
    """The cells of one markdown table row, unescaped and stripped."""
    parts = _CELL_SPLIT.split(line.strip())
    return [p.strip().replace("\\|", "|") for p in parts[1:-1]]


def _table_at(lines: list[str], start: int) -> list[dict[str, str]]:
    """The first markdown table at or after line ``start`` (blank lines may come before it)."""
    i = start
    while i < len(lines) and not lines[i].lstrip().startswith("|"):
        if lines[i].strip() and i > start:
            raise AssertionError(f"SPEC.md line {start + 1}: expected a table, found {lines[i]!r}")
        i += 1
    head = _cells(lines[i])
    rows: list[dict[str, str]] = []
    i += 2  # skip the |---| line
    while i < len(lines) and lines[i].lstrip().startswith("|"):
        rows.append(dict(zip(head, _cells(lines[i]), strict=True)))
        i += 1
    return rows


def _marked_tables(text: str, marker: re.Pattern[str]) -> dict[str, list[dict[str, str]]]:
    """Tables that follow a marker line such as "Layout `FILE_HEADER`", keyed by the marked name."""
    lines = text.splitlines()
    found: dict[str, list[dict[str, str]]] = {}
    for n, line in enumerate(lines):
        m = marker.match(line)
        if m:
            assert m.group(1) not in found, f"SPEC.md marks {m.group(1)} twice"
            found[m.group(1)] = _table_at(lines, n + 1)
    return found


def _tables_with(text: str, first_column: str) -> list[list[dict[str, str]]]:
    """Every table whose first header cell is ``first_column``."""
    lines = text.splitlines()
    out = []
    for n, line in enumerate(lines):
        if line.lstrip().startswith("|") and (n == 0 or not lines[n - 1].lstrip().startswith("|")):
            head = _cells(line)
            if head and head[0] == first_column:
                out.append(_table_at(lines, n))
    return out


def _code(cell: str) -> str:
    """A cell's text without markdown code quotes."""
    return cell.replace("`", "").strip()


# --- what the code says -------------------------------------------------------


@dataclass(frozen=True)
class Field:
    offset: int
    size: int
    type: str
    name: str


def _struct_types(s: struct.Struct) -> list[tuple[int, int, str]]:
    """(offset, size, type) of each item of a little-endian struct format; pads are one item."""
    assert s.format.startswith("<"), f"{s.format} is not little-endian"
    out: list[tuple[int, int, str]] = []
    pos = 0
    items = _STRUCT_ITEM.findall(s.format[1:])
    assert "".join(c + t for c, t in items) == s.format[1:], f"unexpected format {s.format}"
    for count_text, code in items:
        count = int(count_text) if count_text else 1
        if code in "sx":
            out.append((pos, count, f"bytes[{count}]" if code == "s" else f"pad[{count}]"))
            pos += count
            continue
        size = struct.calcsize("<" + code)
        for _ in range(count):
            out.append((pos, size, _STRUCT_TYPES[code]))
            pos += size
    assert pos == s.size
    return out


def _comment_names() -> dict[str, list[str]]:
    """Field names from the comment lines right above each struct in format.py."""
    lines = (SOURCE_DIR / "format.py").read_text(encoding="utf-8").splitlines()
    names: dict[str, list[str]] = {}
    for n, line in enumerate(lines):
        m = re.match(r"^([A-Z_]+) = struct\.Struct\(", line)
        if not m:
            continue
        comment: list[str] = []
        i = n - 1
        while i >= 0 and lines[i].startswith("#"):
            comment.insert(0, lines[i].lstrip("#").strip())
            i -= 1
        text = " ".join(comment)
        # The list of names ends at the first full stop; prose may follow it.
        listed = re.split(r"\.(?:\s|$)", text, maxsplit=1)[0]
        names[m.group(1)] = [p.strip() for p in listed.split(",")]
    return names


def _layouts() -> dict[str, list[Field]]:
    """Every fixed layout in memseg.format: struct.Struct objects and numpy record dtypes."""
    comments = _comment_names()
    out: dict[str, list[Field]] = {}
    for name, value in vars(fmt).items():
        if isinstance(value, struct.Struct):
            types = _struct_types(value)
            listed = comments.get(name, [])
            assert len(listed) == len(types), (
                f"format.py's comment above {name} names {len(listed)} fields, the struct has "
                f"{len(types)}: {listed}")
            out[name] = [Field(o, s, t, nm) for (o, s, t), nm in zip(types, listed, strict=True)]
        elif isinstance(value, np.dtype) and value.names and value.fields:
            fields = []
            for fname in value.names:
                dt, off = value.fields[fname][:2]
                assert dt.kind in "ui", f"{name}.{fname}: unexpected dtype {dt}"
                fields.append(Field(off, dt.itemsize, f"{dt.kind}{dt.itemsize * 8}", fname))
            out[name] = fields
    return out


def _function_params(tree: ast.Module) -> dict[str, list[str]]:
    """Positional parameter names of every function in a module, by function name."""
    params: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            params[node.name] = [a.arg for a in node.args.posonlyargs + node.args.args]
    return params


def _string_args(tree: ast.Module, func: str, param: str, index: int) -> set[str]:
    """Every string constant a module passes as parameter ``param`` (position ``index``) of ``func``."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        callee = node.func
        is_method = isinstance(callee, ast.Attribute)
        name = callee.attr if isinstance(callee, ast.Attribute) else getattr(callee, "id", None)
        if name != func:
            continue
        pos = index - 1 if is_method and index > 0 else index  # self is not passed explicitly
        arg: ast.expr | None = node.args[pos] if pos < len(node.args) else None
        for kw in node.keywords:
            if kw.arg == param:
                arg = kw.value
        assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), (
            f"{func}() is called with a non-literal {param!r}, so its reason codes cannot be listed")
        found.add(arg.value)
    return found


def _enclosing_function(tree: ast.Module, target: ast.AST) -> ast.FunctionDef:
    """The innermost function whose body holds ``target``."""
    holders = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
               and any(n is target for n in ast.walk(node))]
    assert holders, "f-string reason outside a function"
    return max(holders, key=lambda f: f.lineno)


def _expand(tree: ast.Module, call: ast.Call, template: ast.JoinedStr) -> set[str]:
    """The reason codes an f-string reason such as f"{what}_crc" can produce."""
    func = _enclosing_function(tree, call)
    params = _function_params(tree)[func.name]
    results = {""}
    for part in template.values:
        if isinstance(part, ast.Constant):
            results = {r + str(part.value) for r in results}
            continue
        assert isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name), (
            f"line {call.lineno}: a reason f-string may only interpolate a parameter")
        param = part.value.id
        assert param in params, f"line {call.lineno}: {param} is not a parameter of {func.name}"
        values = _string_args(tree, func.name, param, params.index(param))
        assert values, f"line {call.lineno}: no call of {func.name} passes {param}"
        results = {r + v for r in results for v in values}
    return results


def _error_classes() -> set[str]:
    return {n for n, v in vars(errors).items()
            if isinstance(v, type) and issubclass(v, errors.MemsegError)}


def source_reasons() -> dict[str, set[str]]:
    """Every reason code raised in memseg/*.py, with the error classes that carry it."""
    classes = _error_classes()
    found: dict[str, set[str]] = {}
    for path in sorted(SOURCE_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            callee = node.func
            cls = callee.attr if isinstance(callee, ast.Attribute) else getattr(callee, "id", None)
            if cls not in classes:
                continue
            arg: ast.expr | None = node.args[0] if node.args else None
            for kw in node.keywords:
                if kw.arg == "reason":
                    arg = kw.value
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                codes = {arg.value}
            elif isinstance(arg, ast.JoinedStr):
                codes = _expand(tree, node, arg)
            else:
                raise AssertionError(f"{path.name}:{node.lineno}: {cls} raised without a literal reason")
            for code in codes:
                found.setdefault(code, set()).add(cls)
    return found


# --- byte tables ----------------------------------------------------------------


def test_every_layout_has_a_table(spec: str) -> None:
    tables = _marked_tables(spec, _LAYOUT)
    missing = sorted(set(_layouts()) - set(tables))
    assert not missing, f"SPEC.md has no `Layout` table for {missing}"
    unknown = sorted(set(tables) - set(_layouts()))
    assert not unknown, f"SPEC.md has Layout tables for names memseg.format lacks: {unknown}"


_LAYOUT_NAMES = sorted(n for n, v in vars(fmt).items()
                       if isinstance(v, struct.Struct) or (isinstance(v, np.dtype) and v.names))


@pytest.mark.parametrize("name", _LAYOUT_NAMES)
def test_layout_table_matches_struct(spec: str, name: str) -> None:
    rows = _marked_tables(spec, _LAYOUT)[name]
    want = _layouts()[name]
    got = [Field(int(r["Offset"]), int(r["Size"]), _code(r["Type"]), _code(r["Name"])) for r in rows]
    assert [g.name for g in got] == [w.name for w in want], f"{name}: field names or order"
    assert got == want, f"{name}: offsets, sizes or types"
    # Contiguous from 0 to the struct's size: every byte is in the table, none twice.
    pos = 0
    for g in got:
        assert g.offset == pos, f"{name}.{g.name}: gap or overlap at {pos}"
        pos += g.size
    value = getattr(fmt, name)
    assert pos == (value.size if isinstance(value, struct.Struct) else value.itemsize)
    assert all(r["Rule"] for r in rows), f"{name}: every field needs a rule"


def test_crc_spans_are_the_last_four_bytes(spec: str) -> None:
    """Each header CRC covers every byte before it; the tables must end with that CRC."""
    tables = _marked_tables(spec, _LAYOUT)
    for layout, span, crc_name in [("FILE_HEADER", fmt.FILE_HEADER_CRC_SPAN, "header_crc"),
                                   ("RECORD_HEADER", fmt.RECORD_HEADER_CRC_SPAN, "header_crc"),
                                   ("BLOCK_HEADER", fmt.BLOCK_COLUMNS_CRC_SPAN, "columns_crc")]:
        last = tables[layout][-1]
        assert (_code(last["Name"]), int(last["Offset"])) == (crc_name, span)


# --- constants and enums -------------------------------------------------------


def _constant(name: str) -> object:
    module, _, attr = name.rpartition(".")
    source = importlib.import_module(f"memseg.{module}") if module else fmt
    return getattr(source, attr)


def _parse_value(cell: str) -> object:
    text = cell.strip()
    if text.startswith(('`"', "`'")):
        return text.strip("`")[1:-1]
    text = _code(text)
    if re.fullmatch(r"([0-9a-f]{2} )*[0-9a-f]{2}", text) and " " in text:
        return bytes.fromhex(text)
    return int(text.replace("_", ""), 0)


def test_constants_match_format(spec: str) -> None:
    rows = [r for t in _tables_with(spec, "Constant") for r in t]
    documented = {_code(r["Constant"]): _parse_value(r["Value"]) for r in rows}
    for name, value in documented.items():
        assert _constant(name) == value, f"SPEC.md says {name} = {value!r}, the code {_constant(name)!r}"
    # Every plain constant of format.py is documented.
    plain = {n for n, v in vars(fmt).items()
             if n.isupper() and isinstance(v, int | str | bytes) and not isinstance(v, enum.Enum)}
    assert not plain - set(documented), f"undocumented constants: {sorted(plain - set(documented))}"
    assert {"MAGIC", "VERSION_MAJOR", "VERSION_MINOR"} <= set(documented)


def test_enums_match_format(spec: str) -> None:
    tables = _marked_tables(spec, _ENUM)
    enums = {n: v for n, v in vars(fmt).items() if isinstance(v, type) and issubclass(v, enum.IntEnum)
             and v.__module__ == fmt.__name__}
    assert set(tables) == set(enums)
    for name, cls in enums.items():
        got = {int(r["Value"]): _code(r["Name"]) for r in tables[name]}
        assert got == {int(m): m.name for m in cls}, f"enum {name}"


# --- reason codes ----------------------------------------------------------------


def _reason_rows(spec: str) -> dict[str, str]:
    rows = [r for t in _tables_with(spec, "Reason") for r in t]
    out: dict[str, str] = {}
    for r in rows:
        code = _code(r["Reason"])
        assert out.get(code, r["Class"]) == r["Class"], f"reason {code} listed with two classes"
        out[code] = r["Class"]
    return out


def test_source_reason_scan_finds_known_codes() -> None:
    """The scanner itself works: plain, multi-line and f-string reasons are all found."""
    found = source_reasons()
    assert found["bad_magic"] == {"NotMemsegError"}
    assert found["length_mismatch"] == {"CorruptError"}  # raised as Error(\n "length_mismatch"
    assert {"blob_crc", "checkpoint_crc"} <= set(found)  # raised as f"{what}_crc"


def test_every_reason_code_is_documented(spec: str) -> None:
    documented = _reason_rows(spec)
    found = source_reasons()
    missing = sorted(set(found) - set(documented))
    assert not missing, f"reason codes raised in memseg/ but not in SPEC.md: {missing}"
    for code, classes in found.items():
        for cls in classes:
            assert cls in documented[code], f"{code}: raised as {cls}, SPEC.md says {documented[code]}"
    stale = sorted(set(documented) - set(found))
    assert not stale, f"SPEC.md lists reason codes nothing raises: {stale}"


# --- example files -------------------------------------------------------------


def _dump(spec: str, name: str) -> bytes:
    """The bytes of the ```xxd <name>``` block of SPEC.md."""
    m = re.search(rf"^```xxd {re.escape(name)}\n(.*?)^```", spec, re.M | re.S)
    assert m, f"SPEC.md has no xxd dump named {name}"
    out = bytearray()
    for line in m.group(1).splitlines():
        offset, _, rest = line.partition(": ")
        assert int(offset, 16) == len(out), f"{name}: dump line at {offset} is out of place"
        out += bytes.fromhex(rest.split("  ", 1)[0].replace(" ", ""))
    return bytes(out)


def _annotation(spec: str, name: str) -> list[dict[str, str]]:
    lines = spec.splitlines()
    for n, line in enumerate(lines):
        if line.startswith(f"Annotation `{name}`"):
            return _table_at(lines, n + 1)
    raise AssertionError(f"SPEC.md has no Annotation `{name}` table")


def test_header_only_dump_matches_a_new_file(spec: str, tmp_path: Path) -> None:
    dumped = _dump(spec, "header-only")
    path = tmp_path / "empty.mseg"
    memseg.open(path, "a").close()
    fresh = path.read_bytes()
    assert len(dumped) == len(fresh) == fmt.FILE_HEADER.size
    rows = _annotation(spec, "header-only")
    pos = 0
    varies = bytearray(len(fresh))
    varying_names = set()
    for r in rows:
        start, size = int(r["Offset"], 0), int(r["Size"])
        assert start == pos, f"annotation gap or overlap at {pos:#x}"
        assert dumped[start : start + size].hex(" ") == _code(r["Bytes"]), f"annotation at {start:#x}"
        if r["Varies"].lower().startswith("yes"):
            varies[start : start + size] = b"\x01" * size
            varying_names.add(_code(r["Field"]))
        pos += size
    assert pos == len(fresh)
    # Only the file id, creation time and the CRC over them change from file to file.
    assert varying_names == {"file_id", "created_ns", "header_crc"}
    for i, (a, b) in enumerate(zip(dumped, fresh, strict=True)):
        assert varies[i] or a == b, f"byte {i:#x}: SPEC.md shows {a:#04x}, a new file has {b:#04x}"
    # The dump is itself a valid header.
    parse_file_header(dumped)
    assert crc32c(dumped[: fmt.FILE_HEADER_CRC_SPAN]) == int.from_bytes(dumped[-4:], "little")


def test_one_session_dump_is_a_valid_file(spec: str, tmp_path: Path) -> None:
    path = tmp_path / "one.mseg"
    path.write_bytes(_dump(spec, "one-session"))
    with memseg.open(path, "r") as store:
        assert store.tail_bytes == 0
        (info,) = store.sessions()
        assert (info.name, info.meta, info.state, info.status) == ("demo", {"k": 1}, "ended", "ok")
        assert info.id == uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
        (action,) = list(store.session(info.id).actions)
        assert (action.kind, action.value(), action.result_value()) == ("tool", {"x": 1}, "ok")


def test_one_session_record_table_matches_dump(spec: str) -> None:
    data = _dump(spec, "one-session")
    rows = _annotation(spec, "one-session")
    pos = fmt.FILE_HEADER.size
    for r in rows:
        offset = int(r["Offset"], 0)
        assert offset == pos, f"record table: expected a record at {pos:#x}"
        tag, kind, codec, _flags, stored_len, raw_len = fmt.RECORD_HEADER.unpack_from(data, pos)[:6]
        assert tag == int.from_bytes(data[16:24], "little")
        assert (_code(r["Kind"]), int(r["Codec"]), int(r["Stored"]), int(r["Raw"])) == (
            fmt.Kind(kind).name, codec, stored_len, raw_len), f"record at {offset:#x}"
        pos += fmt.record_size(stored_len)
    assert pos == len(data)


# --- an independent reader built from SPEC.md alone ------------------------------

_SPEC_CODES = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q", "i64": "q"}


def _int(v: object) -> int:
    assert isinstance(v, int)
    return v


class SpecReader:
    """Reads a file using only SPEC.md's layout tables and rules, not memseg's decoders."""

    def __init__(self, spec: str, data: bytes) -> None:
        self.tables = _marked_tables(spec, _LAYOUT)
        self.data = data
        assert data[:8] == bytes.fromhex("4d5345470d0a1a0a")
        head = self.unpack("FILE_HEADER", data, 0)
        assert head["major"] == 1
        assert crc32c(data[:60]) == head["header_crc"]
        self.tag = int.from_bytes(data[16:24], "little")

    def layout(self, name: str) -> tuple[struct.Struct, list[str]]:
        codes = []
        for r in self.tables[name]:
            typ = _code(r["Type"])
            m = re.fullmatch(r"(bytes|pad)\[(\d+)\]", typ)
            codes.append(f"{m.group(2)}{'s' if m.group(1) == 'bytes' else 'x'}" if m else _SPEC_CODES[typ])
        names = [_code(r["Name"]) for r in self.tables[name] if not _code(r["Type"]).startswith("pad")]
        return struct.Struct("<" + "".join(codes)), names

    def unpack(self, name: str, buf: bytes, offset: int) -> dict[str, object]:
        layout, names = self.layout(name)
        values = layout.unpack_from(buf, offset)
        out: dict[str, object] = {}
        for n, v in zip(names, values, strict=True):
            if n == "reserved":
                assert v == (bytes(len(v)) if isinstance(v, bytes) else 0), f"{name}: reserved"
            out[n] = v
        return out

    def size(self, name: str) -> int:
        return self.layout(name)[0].size

    def record(self, offset: int, kind: int) -> tuple[dict[str, object], bytes]:
        """Header checks, payload CRC and LZ4 decode as section 2 "Reading a record" says."""
        assert offset % 8 == 0
        head = self.unpack("RECORD_HEADER", self.data, offset)
        assert head["file_tag"] == self.tag and head["kind"] == kind
        assert crc32c(self.data[offset : offset + 28]) == head["header_crc"]
        stored_len, raw_len = _int(head["stored_len"]), _int(head["raw_len"])
        stored = self.data[offset + 32 : offset + 32 + stored_len]
        assert crc32c(stored) == head["payload_crc"]
        padding = self.data[offset + 32 + stored_len : offset + 32 + (stored_len + 7) // 8 * 8]
        assert padding == bytes(len(padding))
        if head["codec"] == 0:
            assert raw_len == stored_len
            return head, stored
        assert head["codec"] == 1 and raw_len <= stored_len * 255 + 64
        raw: bytes = lz4.block.decompress(stored, uncompressed_size=raw_len)
        assert len(raw) == raw_len
        return head, raw


def test_a_reader_built_from_the_spec_reads_the_example(spec: str) -> None:
    """Following only the tables and rules of SPEC.md, the one-session dump decodes fully."""
    data = _dump(spec, "one-session")
    r = SpecReader(spec, data)
    # Section 8: the trailer is the last 72 bytes; flags bit 0 means its region CRC is checked.
    trailer_at = len(data) - 72
    _, payload = r.record(trailer_at, 6)
    t = r.unpack("TRAILER", payload, 0)
    assert t["commit_seq"] == 1 and t["prev_trailer_offset"] == 0 and t["flags"] == 1
    assert crc32c(data[64:trailer_at]) == t["region_crc"]
    # Section 4: the TOC names one session; its strings are in the heap.
    _, toc = r.record(_int(t["toc_offset"]), 5)
    th = r.unpack("TOC_HEADER", toc, 0)
    assert (th["run_count"], th["entry_count"]) == (0, 1)
    entry = r.unpack("TOC_ENTRY", toc, r.size("TOC_HEADER"))
    heap = toc[r.size("TOC_HEADER") + r.size("TOC_ENTRY") :]
    name_len, status_len = _int(entry["name_len"]), _int(entry["status_len"])
    assert heap == b"demo" + b"ok" + b'{"k":1}' and (name_len, status_len) == (4, 2)
    assert entry["flags"] == 0x07 and entry["state"] == 2
    # Section 5: snapshot, then its INDEX chain.
    _, snap = r.record(_int(entry["snapshot_offset"]), 3)
    s = r.unpack("SNAPSHOT_HEADER", snap, 0)
    kinds_at = r.size("SNAPSHOT_HEADER")
    kind_count = _int(s["kind_count"])
    name_lengths = snap[kinds_at + 8 * kind_count : kinds_at + 9 * kind_count]
    names_at = kinds_at + 9 * kind_count
    kinds = [snap[names_at : names_at + name_lengths[0]].decode()]
    assert kinds == ["tool"] and snap[names_at + 4 :] == b"ok"
    _, index = r.record(_int(s["index_offset"]), 4)
    ih = r.unpack("INDEX_HEADER", index, 0)
    assert ih["block_count"] == 1 and ih["prev_index_offset"] == 0
    ref = r.unpack("BLOCK_REF", index, r.size("INDEX_HEADER"))
    # Section 6: the block, its column CRC, blob CRC, ends and flags.
    block_at = _int(ref["offset"])
    _, block = r.record(block_at, 2)
    b = r.unpack("BLOCK_HEADER", block, 0)
    n = _int(b["action_count"])
    assert n == ref["actions"] == 1 and b["first_seq"] == 0 and b["prev_block_offset"] == 0
    hs = r.size("BLOCK_HEADER")
    col_len = 8 * n + (2 * n + 7) // 8 * 8 + (n + 7) // 8 * 8 + 8 * n
    assert crc32c(block[: hs - 4] + block[hs : hs + col_len]) == b["columns_crc"]
    blob_at = hs + col_len
    blob = block[blob_at : blob_at + _int(b["blob_stored_len"])]
    assert crc32c(blob) == b["blob_crc"] and b["blob_codec"] == 0
    ts = struct.unpack_from("<q", block, hs)[0]
    code = struct.unpack_from("<H", block, hs + 8)[0]
    flags = block[hs + 16]
    ends = struct.unpack_from(f"<{2 * n}I", block, hs + 24)
    payload_type, result_type = flags & fmt.VALUE_MASK, flags >> fmt.RESULT_SHIFT & fmt.VALUE_MASK
    assert (ts, kinds[code]) == (1_700_000_000_000_000_000, "tool")
    assert (payload_type, result_type) == (2, 1)  # JSON payload, STR result
    assert (blob[: ends[0]], blob[ends[n - 1] : ends[2 * n - 1]]) == (b'{"x":1}', b"ok")


# --- the order of checks --------------------------------------------------------


def _ordered_reasons(spec: str, heading: str) -> list[str]:
    """The first reason code of each numbered step under a SPEC.md heading."""
    lines = spec.splitlines()
    start = lines.index(heading)
    steps: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        m = re.match(r"^\d+\. .*?\(`([a-z_]+)`", line)
        if m:
            steps.append(m.group(1))
        elif re.match(r"^\d+\. ", line):
            raise AssertionError(f"step without a reason code on its first line: {line!r}")
    return steps


def _with_crc(head: bytearray, span: int) -> bytearray:
    head[span : span + 4] = crc32c(bytes(head[:span])).to_bytes(4, "little")
    return head


_FILE_HEADER_BREAKS = {
    # Each breaks exactly one rule of the file header (offsets from SPEC.md's FILE_HEADER table).
    "bad_magic": lambda h: h.__setitem__(0, 0x4E),
    "short_header": lambda h: h.__delitem__(slice(40, None)),
    "major_version": lambda h: h.__setitem__(slice(8, 10), b"\x02\x00"),
    "header_crc": lambda h: h.__setitem__(60, h[60] ^ 0xFF),
    "reserved": lambda h: h.__setitem__(12, 1),
}


def test_file_header_checks_run_in_spec_order(spec: str, tmp_path: Path) -> None:
    """Breaking step i and every later step reports step i: the order SPEC.md gives is the code's."""
    order = _ordered_reasons(spec, "### Validating the file header")
    assert sorted(order) == sorted(_FILE_HEADER_BREAKS)
    path = tmp_path / "h.mseg"
    memseg.open(path, "a").close()
    good = path.read_bytes()
    for i, reason in enumerate(order):
        head = bytearray(good)
        # Later rules first, CRC fixed up, so each break is the only thing wrong with its field.
        for later in reversed(order[i:]):
            if later not in ("header_crc", "short_header"):
                _FILE_HEADER_BREAKS[later](head)
                _with_crc(head, fmt.FILE_HEADER_CRC_SPAN)
        for later in ("header_crc", "short_header"):
            if later in order[i:]:
                _FILE_HEADER_BREAKS[later](head)
        with pytest.raises(errors.MemsegError) as info:
            parse_file_header(bytes(head))
        assert info.value.reason == reason, f"breaking steps {order[i:]}"


def _record_breaks() -> dict[str, tuple[str, int]]:
    """How to break each step of "Reading a record": (field or action, value)."""
    return {
        "misaligned": ("offset", 4),
        "record_bounds#1": ("limit", 16),  # the header does not fit
        "record_tag": ("file_tag", 1),
        "header_crc": ("crc", 0),
        "record_kind": ("kind", 9),
        "bad_codec": ("codec", 7),
        "reserved": ("flags", 1),
        "record_length": ("stored_len", fmt.MAX_PAYLOAD + 8),
        "record_bounds#2": ("limit", 32 + 16),  # the padded payload does not fit
        "wrong_kind": ("expect", int(fmt.Kind.TOC)),
        "payload_crc": ("payload", 0),
        "length_mismatch": ("raw_len", 1),
    }


def test_record_checks_run_in_spec_order(spec: str) -> None:
    """Each step of SPEC.md's "Reading a record" wins over every later one, as listed."""
    from memseg.framing import frame, read_record

    order = _ordered_reasons(spec, "### Reading a record")
    # record_bounds is checked twice (header, then padded payload): number the occurrences.
    steps = [r if r != "record_bounds" else f"{r}#{order[: n + 1].count(r)}"
             for n, r in enumerate(order)]
    breaks = _record_breaks()
    assert set(breaks) == set(steps), steps
    tag = 0x1122334455667788
    payload = bytes(range(40))
    good = bytes(64) + frame(tag, fmt.Kind.SESSION, fmt.Codec.NONE, payload, len(payload))
    names = ["file_tag", "kind", "codec", "flags", "stored_len", "raw_len"]
    for i, step in enumerate(steps):
        buf = bytearray(good)
        fields = list(fmt.RECORD_HEADER.unpack(bytes(buf[64:96])))
        offset, limit, expect = 64, len(buf), fmt.Kind.SESSION
        for later in steps[i:]:
            what, value = breaks[later]
            if what in names:
                fields[names.index(what)] = value if what != "file_tag" else tag ^ value
            elif what == "offset":
                offset += value
            elif what == "limit":
                limit = min(limit, 64 + value)
            elif what == "expect":
                expect = fmt.Kind(value)
            elif what == "payload":
                buf[96] ^= 0xFF
        head = _with_crc(bytearray(fmt.RECORD_HEADER.pack(*fields)), fmt.RECORD_HEADER_CRC_SPAN)
        if "header_crc" in steps[i:]:
            head[28] ^= 0xFF
        buf[64:96] = head
        with pytest.raises(errors.CorruptError) as info:
            read_record(bytes(buf), offset, limit, tag, expect)
        assert info.value.reason == step.partition("#")[0], f"breaking steps {steps[i:]}"


def test_trailer_checks_run_in_spec_order(spec: str) -> None:
    """Each step of SPEC.md's "Validating a trailer" wins over every later one."""
    from memseg.container import parse_trailer
    from memseg.framing import frame

    order = _ordered_reasons(spec, "### Validating a trailer")
    steps = [r if r != "bad_reference" else f"{r}#{order[: n + 1].count(r)}"
             for n, r in enumerate(order)]
    assert sorted(steps) == sorted(["payload_crc", "trailer_size", "reserved", "bad_reference#1",
                                    "bad_reference#2", "bad_commit_seq"]), steps
    tag, at = 0x0123456789ABCDEF, 640
    for i, step in enumerate(steps):
        later = set(steps[i:])
        # toc_offset, commit_seq, prev_trailer_offset, commit_time_ns, region_crc, flags
        fields = [128, 3, 200, 0, 0, 1]
        if "reserved" in later:
            fields[5] = 2
        if "bad_reference#1" in later:
            fields[0] = at
        if "bad_reference#2" in later:
            fields[2] = at + 8  # differs from the bad toc_offset, so .actual tells them apart
        if "bad_commit_seq" in later:
            fields[1] = 0
        payload = fmt.TRAILER.pack(*fields)
        if "trailer_size" in later:
            payload = payload[:32]  # a well-framed record of the wrong size
        window = bytearray(frame(tag, fmt.Kind.TRAILER, fmt.Codec.NONE, payload, len(payload)))
        window += bytes(fmt.TRAILER_RECORD_SIZE - len(window))
        if "payload_crc" in later:
            window[fmt.RECORD_HEADER.size] ^= 0xFF
        with pytest.raises(errors.CorruptError) as info:
            parse_trailer(bytes(window), at, tag)
        assert info.value.reason == step.partition("#")[0], f"breaking steps {steps[i:]}"
        if step.startswith("bad_reference"):
            assert info.value.actual == (at if step.endswith("#1") else at + 8)


def source_problem_codes() -> set[str]:
    """Codes the forensic tools report without raising: problem(...)/Problem(...) and walk reasons."""
    found: set[str] = set()
    for path in sorted(SOURCE_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                callee = node.func
                name = callee.attr if isinstance(callee, ast.Attribute) else getattr(callee, "id", None)
                if name in ("problem", "Problem") and len(node.args) >= 2:
                    arg = node.args[1]
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        found.add(arg.value)
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
                value = node.value.value
                if "reason" in targets and isinstance(value, str) and value:
                    found.add(value)
    return found


def test_every_problem_code_is_documented(spec: str) -> None:
    documented = set(_reason_rows(spec))
    documented |= {_code(r["Problem"]) for t in _tables_with(spec, "Problem") for r in t}
    missing = sorted(source_problem_codes() - documented)
    assert not missing, f"problem codes reported in memseg/ but not in SPEC.md: {missing}"
