"""The byte layout of a memseg file: magic numbers, limits and one struct per layout.

Sections follow SPEC.md's headings. This module does no I/O. Every size used
elsewhere comes from the ``struct.Struct`` objects here, never typed by hand.
All integers are little-endian.
"""

from __future__ import annotations

import struct
from enum import IntEnum

import numpy as np

# --- 1. File header (SPEC.md "File header") ---------------------------------

MAGIC = b"MSEG\r\n\x1a\n"
VERSION_MAJOR = 1
VERSION_MINOR = 0
# magic, major, minor, flags, file_id, created_ns, reserved, header_crc
FILE_HEADER = struct.Struct("<8sHHI16sq20sI")
FILE_HEADER_CRC_SPAN = FILE_HEADER.size - 4

# --- 2. Records (SPEC.md "Records") -------------------------------------------

ALIGN = 8
# file_tag, kind, codec, flags, stored_len, raw_len, payload_crc, reserved, header_crc
RECORD_HEADER = struct.Struct("<QBBHIIIII")
RECORD_HEADER_CRC_SPAN = RECORD_HEADER.size - 4
MAX_PAYLOAD = 128 * 1024 * 1024
# LZ4 cannot expand data by more than this factor, so a raw length above
# stored * LZ4_MAX_RATIO + 64 is a lie and is refused before allocating.
LZ4_MAX_RATIO = 255


class Kind(IntEnum):
    """Record kinds. 0 and 7..255 are reserved."""

    SESSION = 1
    BLOCK = 2
    SNAPSHOT = 3
    INDEX = 4
    TOC = 5
    TRAILER = 6


class Codec(IntEnum):
    """Payload codecs: a record's payload and a block's sections."""

    NONE = 0
    LZ4 = 1


def padded(length: int) -> int:
    """Round ``length`` up to the record alignment."""
    return (length + ALIGN - 1) & ~(ALIGN - 1)


def record_size(stored_len: int) -> int:
    """Bytes a record with ``stored_len`` payload bytes occupies in the file."""
    return RECORD_HEADER.size + padded(stored_len)


# --- 3. Commit trailer (SPEC.md "Trailer") ------------------------------------

# toc_offset, commit_seq, prev_trailer_offset, commit_time_ns, region_crc, flags.
# region_crc is the CRC32C of every byte from the end of the previous commit
# (or of the file header) up to this trailer.
TRAILER = struct.Struct("<QQQqII")
# Commit sequence numbers are below this (they fit an i64); the newest commit of
# a file a writer opens must be below COMMIT_SEQ_LIMIT - 1, so that it can append seq + 1.
COMMIT_SEQ_LIMIT = 1 << 63
TRAILER_RECORD_SIZE = record_size(TRAILER.size)
# Set when the commit was made durable with ONE fsync (records, TOC and trailer
# written together): its writes may then have reached the disk in any order,
# so the commit counts only if region_crc matches. Without the flag the writer
# synced everything before writing the trailer, and the region is not re-read.
TRAILER_REGION_CHECKED = 0x01
# Commits whose region is at most this large use the one-fsync protocol, so
# the region a reader must re-check at open stays small.
SINGLE_SYNC_MAX_REGION = 1024 * 1024

# --- 4. Table of contents (SPEC.md "TOC") -------------------------------------

# run_count, entry_count, heap_len, reserved
TOC_HEADER = struct.Struct("<IIII")
# offset, count, reserved. An older TOC record whose inline entries form a run,
# and how many entries it holds.
TOC_RUN = struct.Struct("<QI4x")
# session_id, snapshot_offset, session_offset, created_ns, last_activity_ns,
# ended_ns, action_count, checkpoint_count, stored_bytes, state, flags,
# name_len, status_len, reserved, meta_len, reserved
TOC_ENTRY = struct.Struct("<16sQQqqqQQQBBHHHII")


class State(IntEnum):
    """A session's state as stored in TOC entries and snapshots."""

    ACTIVE = 1
    ENDED = 2
    ARCHIVED = 3


# Decoders look states up here: a dict look-up costs less than State(code).
STATE_OF_CODE = {int(s): s for s in State}


FLAG_HAS_ENDED = 0x01

# --- 5. Session records (SPEC.md "SESSION", "SNAPSHOT", "INDEX") -------------

# session_id, created_ns, name_len, flags, meta_len. Flags bit 0: the session has a name.
SESSION_HEADER = struct.Struct("<16sqHHI")
# session_id, session_offset, state, flags, status_len, kind_count,
# action_count, checkpoint_count, created_ns, last_activity_ns, ended_ns,
# index_offset, stored_bytes, last_block_offset, index_block_count, recent_count
SNAPSHOT_HEADER = struct.Struct("<16sQBBHIQQqqqQQQII")
# session_id, block_count, reserved, prev_index_offset
INDEX_HEADER = struct.Struct("<16sIIQ")
# One block reference: record offset, actions in it, checkpoints in it.
BLOCK_REF = np.dtype([("offset", "<u8"), ("actions", "<u4"), ("checkpoints", "<u4")])

# --- 6. Action blocks (SPEC.md "BLOCK") ---------------------------------------

# session_id, first_seq, prev_block_offset, action_count, checkpoint_count,
# blob_raw_len, blob_stored_len, ckpt_raw_len, ckpt_stored_len, blob_codec,
# ckpt_codec, reserved, blob_crc, ckpt_crc, columns_crc. Each section has its
# own CRC so a reader of the columns never touches the payload bytes
# (SPEC.md "BLOCK"). prev_block_offset chains a session's blocks so a
# snapshot need not list the blocks written since the last INDEX record.
BLOCK_HEADER = struct.Struct("<16sQQIIIIIIBB2xIII")
BLOCK_COLUMNS_CRC_SPAN = BLOCK_HEADER.size - 4
# id, at_seq, ts_ns, value_type, reserved, length
CHECKPOINT_ENTRY = struct.Struct("<QQqB3xI")
TS_DTYPE = np.dtype("<i8")
KIND_DTYPE = np.dtype("<u2")
FLAGS_DTYPE = np.dtype("u1")
ENDS_DTYPE = np.dtype("<u4")


class ValueType(IntEnum):
    """How a payload, result or snapshot was given, so it is handed back the same way."""

    BYTES = 0
    STR = 1
    JSON = 2
    NONE = 3


# Action flags: bits 0-1 the payload's ValueType, bits 2-3 the result's.
RESULT_SHIFT = 2
VALUE_MASK = 0x03

# Blocks are cut when either bound is reached, so reading one action never
# decompresses more than about this much.
BLOCK_MAX_ACTIONS = 8192
BLOCK_MAX_RAW = 1024 * 1024
# Blocks written since the last INDEX record are found by walking the block
# chain back from the snapshot's last block; after this many an INDEX record
# lists them, so a reader walks at most this many blocks plus one INDEX record
# per this many blocks. Ending a session always writes the INDEX record.
RECENT_BLOCKS_MAX = 128

MAX_NAME = 1024
MAX_STATUS = 1024
MAX_KIND = 255
MAX_KINDS = 65535
MAX_VALUE = 64 * 1024 * 1024
# Bytes of a session's metadata as stored (JSON): it is in every TOC entry of the session.
MAX_META = 1024 * 1024

# Temporary file a compaction writes beside the store (SPEC.md "Compaction").
COMPACT_SUFFIX = ".compact-tmp"
# Temporary file a new store's header is written to before it is linked into place.
CREATE_SUFFIX = ".create-tmp"
