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
from memseg.forensics import Problem, VerifyReport, verify
from memseg.model import Action, Checkpoint, SessionInfo, SessionState
from memseg.recorder import Recorder
from memseg.retention import SweepReport
from memseg.salvage import SalvageReport, SessionSalvage, salvage
from memseg.scan import RecordInfo, scan
from memseg.search import SearchHit, search
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
    "Problem",
    "ReadOnlyError",
    "RecordInfo",
    "Recorder",
    "SalvageReport",
    "SearchHit",
    "Session",
    "SessionInfo",
    "SessionSalvage",
    "SessionState",
    "StateError",
    "Store",
    "SweepReport",
    "VerifyReport",
    "VersionError",
    "WriteFailedError",
    "compact",
    "open",
    "salvage",
    "scan",
    "search",
    "verify",
]
__version__ = "0.1.0"
