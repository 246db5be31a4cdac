"""The stores under test, imported lazily so one missing library fails only its own column."""

from __future__ import annotations

import importlib

from bench.stores.base import Store

# name -> (module, class); memseg first, then the peers.
REGISTRY: dict[str, tuple[str, str]] = {
    "memseg": ("bench.stores.memseg_store", "MemsegStore"),
    "sqlite": ("bench.stores.sqlite_store", "SqliteStore"),
    "lmdb": ("bench.stores.lmdb_store", "LmdbStore"),
    "mcap": ("bench.stores.mcap_store", "McapStore"),
    "jsonl-dir": ("bench.stores.jsonl_store", "JsonlStore"),
    "jsonl-gz": ("bench.stores.gzip_store", "GzipStore"),
}
SUBJECT = "memseg"
PEERS = tuple(n for n in REGISTRY if n != SUBJECT)


def load_store(name: str) -> Store:
    """Import and instantiate the store called `name`."""
    module, cls = REGISTRY[name]
    store: Store = getattr(importlib.import_module(module), cls)()
    return store
