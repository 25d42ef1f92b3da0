"""The run store: Parquet tables under one root, written atomically, read across runs.

Layout (Hive partitioning, so DuckDB and pyarrow read ``run_id`` from the path)::

    <root>/<table>/run_id=<run_id>/<part>.parquet

A *part* is the unit of work of one task (one problem's candidates, one batch of scores):
its name is deterministic, so a re-run finds it and skips the work instead of duplicating it.
Writes go to a hidden temporary file in the same directory, are fsynced, then renamed over
the final name: a killed writer leaves either the whole part or none (``*.parquet`` globs never
see the temporary name).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from optfolio import owners
from optfolio.errors import InputError, OptfolioError
from optfolio.schemas import RUN_ID, STAGE_TABLES

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TEMP_MARKER = ".tmp-"
# A temporary file is named ``.<final name>.tmp-<owner>-<random>``: the owner says whose
# rename it awaits (see optfolio.owners).
_TEMP_NAME = re.compile(r"^\.(?P<final>.+)\.tmp-(?P<owner>[^-]+)-(?P<nonce>[0-9a-f]{32})$")
# A temporary file of a writer this host cannot check (another machine on a shared mount, or
# an older name without an owner) is swept only once it is older than any write takes: a
# Parquet part, a manifest or a cached answer is written in seconds, a model file in minutes.
STALE_AFTER_S = 6 * 3600


class StoreError(InputError):
    """A store operation was given something it cannot accept; the message names it."""


class StoreFull(OptfolioError, OSError):
    """The file system under the store is full (or over quota): retrying soon will not help.
    Nothing half-written is left; free space and re-run the same run id to resume."""


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def raise_if_full(error: BaseException, path: Path) -> None:
    """Re-raise a full-disk error (OSError, or an error of pyarrow or DuckDB that only says so
    in its text) as :class:`StoreFull` naming ``path``; other errors are left to the caller."""
    # By text too: pyarrow's OSError and DuckDB's IOException carry no errno.
    full = (isinstance(error, OSError) and error.errno in _FULL_ERRNOS) or any(
        text in str(error) for text in ("No space left on device", "Disk quota exceeded")
    )
    if full and not isinstance(error, StoreFull):
        raise StoreFull(
            f"no space left on the device holding {path}: nothing half-written was kept;"
            " free space and re-run with the same run id to resume",
        ) from error


def new_run_id(prefix: str = "run") -> str:
    """A sortable, unique run id such as ``run-20261125T195600Z-3f9a``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{prefix}-{stamp}-{secrets.token_hex(2)}"


def check_name(kind: str, name: str) -> str:
    """Refuse names that would escape the store or break Hive partitioning."""
    if not _SAFE_NAME.match(name):
        raise StoreError(
            f"{kind} {name!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name


def part_name(key: str) -> str:
    """A safe, stable part name for an arbitrary key (a problem id may hold any character)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._-")[:60] or "part"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{slug}-{digest}"


def resolve_root(root: str | os.PathLike[str]) -> Path:
    """The store's directory from a path or a ``file://`` URI (read by pyarrow's URI parser,
    so ``%20`` and the like decode). The same files are then read by DuckDB and pyarrow, so a
    shared mount (NFS, say) seen at one path by every machine serves a run spread over
    several. Object stores (``s3://``, ``gs://``) are refused: manifests, locks and atomic
    renames need a file system."""
    text = os.fspath(root)
    if "://" not in text:
        return Path(text).expanduser().resolve()
    import pyarrow.fs as pafs

    scheme = text.split("://", 1)[0].lower()
    if scheme != "file":
        raise StoreError(
            f"store {text!r}: only directories and file:// URIs are supported (a shared"
            " mount works across machines); object stores are not"
        )
    try:
        filesystem, path = pafs.FileSystem.from_uri(text)
    except (pa.ArrowInvalid, ValueError) as error:
        raise StoreError(f"store {text!r}: not a valid URI ({error})") from None
    if not isinstance(filesystem, pafs.LocalFileSystem):
        raise StoreError(f"store {text!r}: not a local file system")
    return Path(path).resolve()


class RunStore:
    """Parquet tables of many runs under one root: a directory or a ``file://`` URI."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = resolve_root(root)

    # ---- paths ---------------------------------------------------------------------------

    def table_dir(self, table: str) -> Path:
        return self.root / check_name("table", table)

    def run_dir(self, table: str, run_id: str) -> Path:
        return self.table_dir(table) / f"{RUN_ID}={check_name('run id', run_id)}"

    def part_path(self, table: str, run_id: str, part: str) -> Path:
        return self.run_dir(table, run_id) / f"{check_name('part', part)}.parquet"

    def glob(self, table: str) -> str:
        """The glob DuckDB reads a table from, across all runs."""
        return str(self.table_dir(table) / f"{RUN_ID}=*" / "*.parquet")

    # ---- writing -------------------------------------------------------------------------

    def has_part(self, table: str, run_id: str, part: str) -> bool:
        return self.part_path(table, run_id, part).is_file()

    def write_part(self, table: str, run_id: str, part: str, data: pa.Table) -> Path:
        """Write one part atomically, conforming ``data`` to the table's schema first."""
        return write_parquet_atomically(conform(table, data), self.part_path(table, run_id, part))

    def write_file(self, relative: str, data: pa.Table) -> Path:
        """Write a table outside the run layout (e.g. ``simulation/part-0.parquet``), atomically."""
        final = (self.root / relative).resolve()
        if self.root not in final.parents:
            raise StoreError(f"path {relative!r} leaves the store root {self.root}")
        return write_parquet_atomically(data, final)

    def remove_temporaries(self) -> int:
        """Delete the temporary files that writers which are gone left behind; returns how
        many. Safe while other processes write into the store: a live writer's temporary
        file is never touched (see :func:`remove_stale_temporaries`)."""
        return remove_stale_temporaries(self.root)

    # ---- reading -------------------------------------------------------------------------

    def runs(self, table: str = "problems") -> list[str]:
        """Run ids that have at least one part of ``table``, oldest name first."""
        directory = self.table_dir(table)
        if not directory.is_dir():
            return []
        prefix = f"{RUN_ID}="
        return sorted(
            entry.name[len(prefix) :]
            for entry in directory.iterdir()
            if entry.is_dir() and entry.name.startswith(prefix) and any(entry.glob("*.parquet"))
        )

    def parts(self, table: str, run_id: str) -> list[str]:
        directory = self.run_dir(table, run_id)
        return sorted(p.stem for p in directory.glob("*.parquet")) if directory.is_dir() else []

    def read(self, table: str, run_ids: Iterable[str] | None = None) -> pa.Table:
        """One table across runs (all runs by default), with ``run_id`` as a column."""
        schema = STAGE_TABLES[table].append(pa.field(RUN_ID, pa.string()))
        wanted = None if run_ids is None else list(run_ids)
        files = [
            str(path)
            for run in (wanted if wanted is not None else self.runs(table))
            for path in sorted(self.run_dir(table, run).glob("*.parquet"))
        ]
        if not files:
            return schema.empty_table()
        dataset = ds.dataset(files, schema=schema, format="parquet", partitioning="hive")
        return dataset.to_table()


def conform(table: str, data: pa.Table) -> pa.Table:
    """Order and cast ``data`` to the table's schema; name the column that does not fit."""
    if table not in STAGE_TABLES:
        raise StoreError(f"unknown table {table!r}; known: {', '.join(sorted(STAGE_TABLES))}")
    schema = STAGE_TABLES[table]
    if RUN_ID in data.column_names:
        raise StoreError(f"table {table!r}: column 'run_id' comes from the path, not the data")
    missing = [f.name for f in schema if f.name not in data.column_names]
    if missing:
        raise StoreError(f"table {table!r}: missing column(s) {', '.join(missing)}")
    extra = [name for name in data.column_names if name not in schema.names]
    if extra:
        raise StoreError(f"table {table!r}: unexpected column(s) {', '.join(extra)}")
    columns = []
    for field in schema:
        column = data.column(field.name)
        try:
            column = column.cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise StoreError(
                f"table {table!r}, column {field.name!r}: cannot be read as {field.type}: {error}"
            ) from error
        if not field.nullable and column.null_count:
            raise StoreError(f"table {table!r}, column {field.name!r}: null values not allowed")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def write_parquet_atomically(data: pa.Table, final: Path) -> Path:
    """Write ``data`` to ``final`` so that readers see the whole file or nothing."""
    with atomic_path(final) as temp:
        pq.write_table(data, temp, compression="zstd")
    return final


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """A temporary path beside ``final`` for the caller to write. When the block ends, the
    file is synced and renamed over ``final`` (readers see the old file or the whole new
    one) and the rename made durable; when it fails, the temporary file is removed and a
    full disk is raised as :class:`StoreFull`."""
    temp = temporary_path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        yield temp
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, final)
        _fsync_dir(final.parent)
    except OSError as error:
        raise_if_full(error, final)
        raise
    finally:
        temp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_path(final: Path) -> Path:
    """A private, hidden name beside ``final`` for this process to write and then rename;
    it names this process as its owner, so a sweep can tell whether the writer is gone."""
    return final.with_name(f".{final.name}{_TEMP_MARKER}{owners.current()}-{uuid.uuid4().hex}")


def temporary_is_stale(path: Path, now: float | None = None) -> bool:
    """Whether ``path`` is a temporary file no live writer will rename: its owner on this
    host is gone, or (owner unknown here) it is older than :data:`STALE_AFTER_S`."""
    match = _TEMP_NAME.match(path.name)
    owner = owners.Owner.parse(match["owner"]) if match else None
    alive = owner.alive() if owner is not None else None
    if alive is not None:
        return not alive
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:
        return False  # renamed or removed meanwhile
    return age > STALE_AFTER_S


def remove_stale_temporaries(root: Path) -> int:
    """Delete every temporary file under ``root`` that :func:`temporary_is_stale` says no
    live writer will rename; returns how many. A writer's temporary file is removed only
    once that writer is gone, so this may run at any time beside other writers."""
    removed = 0
    if root.is_dir():
        for path in root.rglob(f".*{_TEMP_MARKER}*"):
            if path.is_file() and temporary_is_stale(path):
                path.unlink(missing_ok=True)
                removed += 1
    return removed
