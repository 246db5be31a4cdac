"""Deterministic sessions shaped like a coding agent's event stream.

Every store in the benchmark records exactly the same events, so the
generator is pure: the same (seed, session count, events per session) always
yields the same bytes. Payloads are JSON built from a Zipf-distributed
vocabulary so that they compress the way real transcripts do (frequent short
words, a long tail of identifiers), not like random bytes or repeated text.

Events are generated before any store is timed; they hold the payload
already encoded as JSON bytes, which is how a recorder receives them from an
agent's stream.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import orjson

# Checkpoints are taken after every CHECKPOINT_EVERY events (the cadence).
CHECKPOINT_EVERY = 500

VOCAB_SIZE = 30_000
# With PHRASE_SHARE these give LZ4 about 1.6x and gzip about 2.7x on the text (1 MiB pieces),
# close to what both achieve on English prose; a lower exponent or fewer
# phrases makes payloads compress worse than real transcripts.
ZIPF_EXPONENT = 1.1
PHRASE_SHARE = 0.3

KINDS = (
    "user_message",
    "thinking_delta",
    "reasoning_delta",
    "message",
    "tool_call",
    "tool_output",
    "diff",
    "test_result",
    "token_usage",
    "cost_update",
    "approval",
)

_TOOLS = ("bash", "read_file", "write_file", "grep", "apply_patch", "run_tests", "list_dir")
_MODELS = ("model-small", "model-medium", "model-large")
# Pseudo-words are built from these syllables; symbols and keywords take the
# top ranks, as they do in code and logs.
_SYLLABLES = (
    "a", "e", "i", "o", "u", "ka", "ke", "ki", "ko", "ku", "sa", "se", "si", "so", "su", "ta",
    "te", "ti", "to", "tu", "na", "ne", "ni", "no", "nu", "ha", "he", "hi", "ho", "ma", "me",
    "mi", "mo", "mu", "ra", "re", "ri", "ro", "ru", "ya", "yo", "wa", "st", "tr", "pr", "str",
    "ing", "ion", "er", "al",
)
_SYMBOLS = (
    "=", "(", ")", ":", ",", ".", "{", "}", "[", "]", "->", "==", "+", "-", "*", "/", "#", "_",
    "self", "def", "return", "if", "for", "in", "None",
)


@dataclass(frozen=True, slots=True)
class Event:
    """One recorded action: its kind, timestamp, JSON payload and optional JSON result."""

    kind: str
    ts_ns: int
    payload: bytes
    result: bytes | None


@dataclass(frozen=True, slots=True)
class Session:
    """One agent run: identity, metadata, inputs, and its events in order."""

    id: uuid.UUID
    name: str
    meta: dict[str, str]
    inputs: dict[str, str]
    created_ns: int
    events: list[Event] = field(repr=False)

    @property
    def ended_ns(self) -> int:
        """Timestamp of the session's end: just after its last event."""
        return (self.events[-1].ts_ns if self.events else self.created_ns) + 1_000_000


def _zipf_cdf(n: int) -> npt.NDArray[np.float64]:
    """Cumulative probability of ranks 1..n under the Zipf law."""
    cdf = np.cumsum(1.0 / np.arange(1, n + 1, dtype=np.float64) ** ZIPF_EXPONENT)
    out: npt.NDArray[np.float64] = cdf / cdf[-1]
    return out


def checkpoint_state(session: Session, upto: int) -> dict[str, object]:
    """The state saved by the checkpoint taken after `upto` events."""
    return {"frame_count": upto, "session": session.name, "turn": upto // 37}


@dataclass(frozen=True)
class Vocabulary:
    """Entries packed into one byte buffer so whole sessions of text are built with numpy."""

    blob: np.ndarray  # uint8, all words concatenated
    offsets: np.ndarray  # int64 start of each word in blob
    lengths: np.ndarray  # int64 length of each word
    cdf: np.ndarray  # float64 cumulative Zipf probability by rank

    @classmethod
    def build(cls, seed: int) -> Vocabulary:
        """Make VOCAB_SIZE distinct entries; short symbols take the top ranks.

        PHRASE_SHARE of the entries are phrases of two to five words. Real text
        repeats word sequences, not only words; without them LZ4 finds almost
        no matches and the payloads compress far worse than transcripts do.
        """
        rng = np.random.default_rng([seed, 0x5EED])
        words: list[str] = list(_SYMBOLS)
        seen = set(words)
        while len(words) < VOCAB_SIZE:
            # Word length grows with rank, as in natural language.
            n = 1 + min(5, int(rng.exponential(0.6 + len(words) / 8000)))
            w = "".join(_SYLLABLES[i] for i in rng.integers(0, len(_SYLLABLES), n))
            if len(words) % 7 == 0:
                w = w + "_" + _SYLLABLES[int(rng.integers(0, len(_SYLLABLES)))]
            if w not in seen:
                seen.add(w)
                words.append(w)
        cdf = _zipf_cdf(len(words))
        entries: list[str] = []
        for w in words:
            if rng.random() < PHRASE_SHARE:
                picks = np.searchsorted(cdf, rng.random(int(rng.integers(2, 6))))
                entries.append(" ".join(words[min(int(j), len(words) - 1)] for j in picks))
            else:
                entries.append(w)
        encoded = [e.encode("ascii") for e in entries]
        lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
        offsets = np.zeros(len(encoded), dtype=np.int64)
        offsets[1:] = np.cumsum(lengths)[:-1]
        blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        return cls(blob, offsets, lengths, cdf)

    def texts(self, rng: np.random.Generator, counts: np.ndarray, newline_every: int) -> list[str]:
        """One text per entry of `counts` (entries each); a newline about every `newline_every`."""
        total = int(counts.sum())
        idx = np.searchsorted(self.cdf, rng.random(total))
        idx = np.minimum(idx, len(self.lengths) - 1)
        slot = self.lengths[idx] + 1  # each word plus its separator
        out_start = np.zeros(total, dtype=np.int64)
        out_start[1:] = np.cumsum(slot)[:-1]
        size = int(slot.sum())
        # Gather index: byte k of word j comes from offsets[idx[j]] + k.
        src = np.repeat(self.offsets[idx] - out_start, slot) + np.arange(size, dtype=np.int64)
        src[out_start + slot - 1] = 0  # separator slots: overwritten below
        buf = self.blob[src]
        seps = np.where(rng.random(total) < 1.0 / newline_every, ord("\n"), ord(" "))
        buf[out_start + slot - 1] = seps
        raw = buf.tobytes()
        ends = np.cumsum(counts)
        starts = ends - counts
        out: list[str] = []
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            if a == b:
                out.append("")
            else:
                # Drop the separator after the last word.
                out.append(raw[out_start[a] : out_start[b - 1] + slot[b - 1] - 1].decode("ascii"))
        return out


# Lognormal length of each kind's text in vocabulary entries (about 1.6 words
# each): (median, sigma, min, max). Tuned so the average event, payload plus
# result, is about 1 KB while most events are short deltas.
_SHAPES: dict[str, tuple[float, float, int, int]] = {
    "user_message": (40.0, 0.9, 5, 400),
    "thinking_delta": (3.0, 0.4, 1, 8),
    "reasoning_delta": (4.0, 0.4, 1, 10),
    "message": (90.0, 0.8, 10, 700),
    "tool_call": (14.0, 0.9, 3, 200),
    "tool_output": (740.0, 1.0, 10, 3000),
    "diff": (340.0, 0.8, 10, 2000),
    "test_result": (150.0, 0.8, 10, 1500),
    "token_usage": (0.0, 0.0, 0, 0),
    "cost_update": (0.0, 0.0, 0, 0),
    "approval": (12.0, 0.5, 3, 40),
}


def _turn_kinds(rng: np.random.Generator) -> list[str]:
    """The kinds of one agent turn, in stream order."""
    kinds: list[str] = []
    if rng.random() < 0.12:
        kinds.append("user_message")
    kinds += ["thinking_delta"] * int(rng.geometric(1 / 6))
    kinds += ["reasoning_delta"] * int(rng.geometric(1 / 3))
    kinds.append("message")
    for _ in range(int(rng.geometric(1 / 2))):
        if rng.random() < 0.25:
            kinds.append("approval")
        kinds += ["tool_call", "tool_output"]
        if rng.random() < 0.3:
            kinds.append("diff")
        if rng.random() < 0.2:
            kinds.append("test_result")
    kinds += ["token_usage", "cost_update"]
    return kinds


def _payload(kind: str, text: str, i: int, rng: np.random.Generator) -> tuple[bytes, bytes | None]:
    """Encode one event's payload and, for kinds that have one, its result.

    orjson hands back bytes objects with kilobytes of spare capacity; a
    million of them kept for the whole run would take ten times the memory
    of their contents, so each is copied to an exact-size object.
    """
    payload, result = _encode(kind, text, i, rng)
    return memoryview(payload).tobytes(), None if result is None else memoryview(result).tobytes()


def _encode(kind: str, text: str, i: int, rng: np.random.Generator) -> tuple[bytes, bytes | None]:
    """One event's payload and, for kinds that have one, its result, as orjson made them."""
    call = f"call_{i:06d}"
    if kind in ("thinking_delta", "reasoning_delta"):
        return orjson.dumps({"delta": text}), None
    if kind == "user_message":
        return orjson.dumps({"role": "user", "text": text}), None
    if kind == "message":
        return orjson.dumps({"role": "assistant", "text": text}), None
    if kind == "tool_call":
        tool = _TOOLS[i % len(_TOOLS)]
        return orjson.dumps({"call_id": call, "tool": tool, "args": {"command": text}}), None
    if kind == "tool_output":
        code = 0 if rng.random() < 0.85 else 1
        ms = int(rng.integers(3, 30_000))
        res: dict[str, object] = {"ok": code == 0, "exit_code": code, "duration_ms": ms}
        return orjson.dumps({"call_id": call, "stdout": text, "stderr": ""}), orjson.dumps(res)
    if kind == "diff":
        path = f"src/pkg{i % 13}/mod{i % 29}.py"
        lines = text.split("\n")
        patch = "\n".join(("+" if j % 3 else "-") + line for j, line in enumerate(lines))
        body = f"--- a/{path}\n+++ b/{path}\n@@ -{i},7 +{i},9 @@\n{patch}"
        res = {"applied": True, "files": 1 + i % 3}
        return orjson.dumps({"path": path, "patch": body}), orjson.dumps(res)
    if kind == "test_result":
        failed = int(rng.integers(0, 3)) if rng.random() < 0.3 else 0
        res = {"passed": int(rng.integers(5, 400)), "failed": failed, "skipped": i % 4}
        return orjson.dumps({"suite": f"tests/test_{i % 17}.py", "output": text}), orjson.dumps(res)
    if kind == "token_usage":
        usage = {
            "input_tokens": int(rng.integers(500, 120_000)),
            "output_tokens": int(rng.integers(10, 4000)),
            "cache_read_tokens": int(rng.integers(0, 100_000)),
        }
        return orjson.dumps(usage), None
    if kind == "cost_update":
        usd = round(float(rng.random()) * 0.05, 6)
        return orjson.dumps({"usd": usd, "total_usd": round(usd * (i + 1), 4)}), None
    if kind == "approval":
        res = {"approved": bool(rng.random() < 0.9), "by": "user"}
        return orjson.dumps({"call_id": call, "request": text}), orjson.dumps(res)
    raise ValueError(f"unknown kind {kind!r}")


# Gap before an event of each kind: deltas stream fast, tools take seconds.
_GAP_NS = {
    "thinking_delta": 30_000_000,
    "reasoning_delta": 40_000_000,
    "tool_output": 2_000_000_000,
    "test_result": 8_000_000_000,
    "user_message": 20_000_000_000,
}
_DEFAULT_GAP_NS = 300_000_000
_EPOCH_NS = 1_700_000_000_000_000_000


def make_session(vocab: Vocabulary, seed: int, index: int, n_events: int) -> Session:
    """Session number `index` of the workload with `seed`, holding `n_events` events."""
    rng = np.random.default_rng([seed, index])
    kinds: list[str] = []
    while len(kinds) < n_events:
        kinds += _turn_kinds(rng)
    kinds = kinds[:n_events]
    counts = np.zeros(n_events, dtype=np.int64)
    for k, (median, sigma, lo, hi) in _SHAPES.items():
        mask = np.fromiter((x == k for x in kinds), dtype=bool, count=n_events)
        n = int(mask.sum())
        if n and hi:
            words = np.exp(np.log(median) + sigma * rng.standard_normal(n))
            counts[mask] = np.clip(words.astype(np.int64), lo, hi)
    texts = vocab.texts(rng, counts, newline_every=12)
    created = _EPOCH_NS + index * 3_600_000_000_000
    ts = created
    events: list[Event] = []
    for i, (kind, text) in enumerate(zip(kinds, texts, strict=True)):
        ts += _GAP_NS.get(kind, _DEFAULT_GAP_NS) + int(rng.integers(0, 1_000_000))
        payload, result = _payload(kind, text, i, rng)
        events.append(Event(kind, ts, payload, result))
    sid = uuid.UUID(bytes=rng.bytes(16), version=4)
    meta = {
        "model": _MODELS[index % len(_MODELS)],
        "repo": f"github.com/example/project{index % 11}",
        "branch": f"task-{index:05d}",
    }
    prompt = vocab.texts(rng, np.array([60]), newline_every=20)[0]
    inputs = {"prompt": prompt, "model": meta["model"]}
    return Session(sid, f"run-{index:05d}", meta, inputs, created, events)


def make_workload(seed: int, sessions: int, events: int) -> list[Session]:
    """The whole workload: `sessions` sessions of `events` events each."""
    vocab = Vocabulary.build(seed)
    return [make_session(vocab, seed, i, events) for i in range(sessions)]


def iter_events(sessions: list[Session]) -> Iterator[Event]:
    """All events of all sessions, in recording order."""
    for s in sessions:
        yield from s.events


def raw_bytes(sessions: list[Session]) -> int:
    """Payload plus result bytes of the workload: what a store must keep at minimum."""
    return sum(len(e.payload) + len(e.result or b"") for e in iter_events(sessions))
