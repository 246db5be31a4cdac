"""memseg's error hierarchy: every failure memseg itself detects is one of these.

Errors carry fields (reason code, offset, expected, actual) and build their
message from them, so callers and tests can branch on ``.reason`` rather than
on message text. Reason codes are stable and listed in SPEC.md.
"""

from __future__ import annotations


class MemsegError(Exception):
    """Base class of every error memseg raises on its own account."""

    def __init__(
        self,
        reason: str,
        detail: str = "",
        *,
        offset: int | None = None,
        expected: object = None,
        actual: object = None,
    ) -> None:
        self.reason = reason
        self.detail = detail
        self.offset = offset
        self.expected = expected
        self.actual = actual
        super().__init__(self._message())

    def _message(self) -> str:
        parts = [self.reason]
        if self.offset is not None:
            parts.append(f"at offset {self.offset}")
        text = " ".join(parts)
        if self.detail:
            text += f": {self.detail}"
        if self.expected is not None or self.actual is not None:
            text += f" (expected {self.expected!r}, found {self.actual!r})"
        return text


class NotMemsegError(MemsegError):
    """The bytes are not a memseg file at all (bad magic, too short, empty)."""


class VersionError(MemsegError):
    """The file was written by an incompatible (newer major) format version."""


class CorruptError(MemsegError):
    """A checksum, length, offset or structural rule failed inside a memseg file."""


class LockedError(MemsegError):
    """Another writer holds the file's lock."""


class ReadOnlyError(MemsegError):
    """A write was attempted through a store opened read-only."""


class ClosedError(MemsegError):
    """The store or recorder was used after it was closed or ended."""


class WriteFailedError(MemsegError):
    """A write or fsync failed; the store refuses further writes until reopened."""


class StateError(MemsegError):
    """The operation does not fit the session's state (e.g. archiving an active session)."""
