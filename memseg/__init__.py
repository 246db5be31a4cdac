"""memseg: a single-file, append-only, crash-safe storage engine for recorded sessions."""

from memseg.compactor import CompactReport, compact
from memseg.errors import (
    ClosedError,
    CorruptError,
    LockedError,
    MemsegError,
    NotMemsegError,
    ReadOnlyError,
    StateError,
    VersionError,
    WriteFailedError,
)
from memseg.model import Action, Checkpoint, SessionInfo, SessionState
from memseg.recorder import Recorder
from memseg.retention import SweepReport
from memseg.store import Store, open
from memseg.view import Actions, Session

__all__ = [
    "Action",
    "Actions",
    "Checkpoint",
    "ClosedError",
    "CompactReport",
    "CorruptError",
    "LockedError",
    "MemsegError",
    "NotMemsegError",
    "ReadOnlyError",
    "Recorder",
    "Session",
    "SessionInfo",
    "SessionState",
    "StateError",
    "Store",
    "SweepReport",
    "VersionError",
    "WriteFailedError",
    "compact",
    "open",
]
__version__ = "0.1.0"
