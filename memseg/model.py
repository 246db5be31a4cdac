"""The objects users hold: SessionInfo, Action, Checkpoint."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from memseg.codec import decode_value
from memseg.format import State


class SessionState(StrEnum):
    """A session's state; compares equal to its string value."""

    ACTIVE = "active"
    ENDED = "ended"
    ARCHIVED = "archived"

    @classmethod
    def from_code(cls, code: int) -> SessionState:
        return _FROM_CODE[code]  # type: ignore[index]

    @property
    def code(self) -> State:
        return _TO_CODE[self]


_FROM_CODE = {
    State.ACTIVE: SessionState.ACTIVE,
    State.ENDED: SessionState.ENDED,
    State.ARCHIVED: SessionState.ARCHIVED,
}
_TO_CODE = {v: k for k, v in _FROM_CODE.items()}


@dataclass(slots=True)
class SessionInfo:
    """What the table of contents says about a session (no action data is read)."""

    id: uuid.UUID
    name: str | None
    state: SessionState
    meta: dict[str, Any]
    created_ns: int
    ended_ns: int | None
    last_activity_ns: int
    status: str | None
    action_count: int
    checkpoint_count: int
    stored_bytes: int


# Not frozen: a frozen dataclass's __init__ costs several times more, and
# reading a session builds one Action per recorded action.
@dataclass(slots=True)
class Action:
    """One recorded action. ``payload``/``result`` are the stored bytes; ``value()``
    and ``result_value()`` give back what was recorded, in its original type."""

    seq: int
    ts_ns: int
    kind: str
    payload: bytes
    result: bytes | None
    payload_type: int = field(repr=False)
    result_type: int = field(repr=False)

    def value(self) -> Any:
        """The payload as recorded: bytes, str, or the JSON value."""
        return decode_value(self.payload_type, self.payload, -1)

    def result_value(self) -> Any:
        """The result as recorded, or None when the action has none."""
        if self.result is None:
            return None
        return decode_value(self.result_type, self.result, -1)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint of state taken after ``at_seq`` actions had been recorded."""

    id: int
    at_seq: int
    ts_ns: int
    snapshot: bytes
    snapshot_type: int = field(repr=False)

    def value(self) -> Any:
        """The snapshot as recorded: bytes, str, or the JSON value."""
        return decode_value(self.snapshot_type, self.snapshot, -1)
