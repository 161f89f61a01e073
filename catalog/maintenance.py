"""Table maintenance while the Flink jobs keep writing: compaction, snapshot expiry, orphans.

Streaming writes commit every checkpoint, one small file per partition touched. Maintenance:

1. **Compaction** (:func:`compact_table`) rewrites the small files of a partition
   (day x market) into files of the target size, sorted by the table's sort order. One
   commit replaces exactly the files it read (explicit deletes, never a filter), so rows that
   a concurrent writer appends, to that partition or any other, stay. Commits are optimistic:
   on a conflict (``CommitFailedException``, or pyiceberg's ``ValidationException`` for a
   concurrent append) the rewrite is committed again on the new head as long as every file
   it replaces is still live, else it is discarded and planned again.
2. **Snapshot expiry** (:func:`expire_snapshots`) drops snapshots older than the retention
   (keeping the newest ``retain_last`` and every branch/tag head) and deletes the files that
   only the expired snapshots referenced.
3. **Orphan removal** (:func:`remove_orphan_files`) deletes files under the table location
   that no snapshot or metadata references and that are older than a safety age (a file
   younger than that may belong to a commit in flight, e.g. a Flink checkpoint).
"""

from __future__ import annotations

import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ticklake.catalog.query import service_errors, strip_scheme, warehouse_filesystem
from ticklake.catalog.tables import TABLES
from ticklake.errors import TickLakeError

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import FileScanTask, Table

log = logging.getLogger(__name__)

#: (done, total) after each unit of work.
Progress = Callable[[int, int], None]

DEFAULT_TARGET_FILE_SIZE = 128 * 1024 * 1024
DEFAULT_RETENTION = timedelta(days=7)
DEFAULT_ORPHAN_AGE = timedelta(days=3)
MAINTENANCE_PROPERTY = "ticklake.maintenance"


class MaintenanceError(TickLakeError):
    """Maintenance could not complete (e.g. too many commit conflicts in a row)."""

    exit_code = 15


# -- parsing ----------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)


def parse_duration(text: str) -> timedelta:
    """``30s``, ``15m``, ``12h``, ``7d``, ``2w``."""
    m = _DURATION.match(text)
    if not m:
        raise MaintenanceError(
            f"malformed duration {text!r}", hint="use a number and a unit: 30s, 15m, 12h, 7d, 2w"
        )
    n, unit = int(m.group(1)), m.group(2)
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    return timedelta(seconds=n * seconds)


def parse_size(text: str) -> int:
    """Bytes from ``134217728``, ``128MiB``, ``128MB``, ``64m``, ``1GiB`` (binary units)."""
    m = _SIZE.match(text)
    if not m:
        raise MaintenanceError(f"malformed size {text!r}", hint="e.g. 128MiB, 512KiB, 1GiB")
    unit = (m.group(2) or "").lower()[:1]
    scale = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit]
    size = int(float(m.group(1)) * scale)
    if size <= 0:
        raise MaintenanceError(f"size must be positive, got {text!r}")
    return size


# -- compaction -------------------------------------------------------------------------------


@dataclass
class CompactionResult:
    table: str
    partitions: int = 0
    files_before: int = 0
    files_after: int = 0
    rows: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    commits: int = 0
    conflicts: int = 0
    skipped_with_deletes: int = 0


def _partition_key(task: FileScanTask) -> tuple[Any, ...]:
    return (task.file.spec_id, *(task.file.partition[i] for i in range(len(task.file.partition))))


def plan_compaction(
    table: Table, *, target_file_size: int, min_input_files: int = 2
) -> tuple[dict[tuple[Any, ...], list[FileScanTask]], int]:
    """Partitions worth compacting -> their small files; and how many were skipped (deletes).

    A file is small below 3/4 of the target; a partition is compacted when it has at least
    ``min_input_files`` small files. Partitions with delete files are left alone.
    """
    groups: dict[tuple[Any, ...], list[FileScanTask]] = {}
    with_deletes: set[tuple[Any, ...]] = set()
    with service_errors():
        for task in table.scan().plan_files():
            key = _partition_key(task)
            if task.delete_files:
                with_deletes.add(key)
            if task.file.file_size_in_bytes < target_file_size * 3 // 4:
                groups.setdefault(key, []).append(task)
    plan = {k: v for k, v in groups.items() if len(v) >= min_input_files and k not in with_deletes}
    return plan, len(with_deletes)


def _sorted(table: Table, data: Any) -> Any:
    names = [table.schema().find_column_name(f.source_id) for f in table.sort_order().fields]
    keys = [(n, "ascending") for n in names if n is not None and n in data.column_names]
    return data.sort_by(keys) if keys else data


def write_data_files(
    table: Table, data: Any, target_file_size: int | None = None
) -> list[DataFile]:
    """Write an Arrow table as Parquet data files of ``table``, one or more per partition.

    Not yet committed: hand the files to a snapshot producer. The partition values are
    computed here (identity and day transforms), because pyiceberg's own writer needs the
    optional ``pyiceberg-core`` package for the ``day`` transform. Rows are sorted by the
    table's sort order and split into files of about ``target_file_size`` bytes.
    """
    import itertools

    from pyiceberg.io.pyarrow import bin_pack_arrow_table, pyarrow_to_schema, write_file
    from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
    from pyiceberg.table import WriteTask

    target = target_file_size or int(
        table.properties.get("write.target-file-size-bytes", DEFAULT_TARGET_FILE_SIZE)
    )
    props = dict(table.metadata.properties)
    props["write.target-file-size-bytes"] = str(target)
    metadata = table.metadata.model_copy(update={"properties": props})
    schema, spec = table.schema(), table.spec()
    task_schema = pyarrow_to_schema(
        data.schema, name_mapping=schema.name_mapping, format_version=metadata.format_version
    )
    columns = []
    for pf in spec.fields:
        name = schema.find_column_name(pf.source_id)
        values = data.column(name)
        kind = str(pf.transform)
        if kind == "identity":
            columns.append(values.to_pylist())
        elif kind == "day":
            micros = values.cast("int64").to_pylist()
            columns.append([None if v is None else v // 86_400_000_000 for v in micros])
        else:
            raise MaintenanceError(f"cannot write partition transform {kind} of {name}")
    rows: dict[tuple[Any, ...], list[int]] = {}
    for i, key in enumerate(zip(*columns, strict=True)):
        rows.setdefault(key, []).append(i)
    write_uuid, counter = uuid.uuid4(), itertools.count(0)
    tasks = []
    for key, indices in rows.items():
        part = _sorted(table, data.take(indices))
        partition_key = PartitionKey(
            field_values=[PartitionFieldValue(f, v) for f, v in zip(spec.fields, key, strict=True)],
            partition_spec=spec,
            schema=schema,
        )
        for batches in bin_pack_arrow_table(part, target):
            tasks.append(
                WriteTask(write_uuid, next(counter), task_schema, batches, None, partition_key)
            )
    return list(write_file(table.io, metadata, iter(tasks)))


def append_rows(
    table: Table, data: Any, *, snapshot_properties: dict[str, str] | None = None
) -> int:
    """Append an Arrow table to ``table`` in one commit (retried on conflict by pyiceberg).

    Returns the new snapshot id. The writer tests, the bench and backfills use this.
    """
    files = write_data_files(table, data)
    try:
        tx = table.transaction()
        with tx.update_snapshot(snapshot_properties=snapshot_properties or {}).fast_append() as app:
            for f in files:
                app.append_data_file(f)
            snapshot_id: int = app.snapshot_id
        tx.commit_transaction()
    except BaseException:
        _delete_quietly(table, [f.file_path for f in files])
        raise
    return snapshot_id


def _live_paths(table: Table) -> set[str]:
    return {t.file.file_path for t in table.scan().plan_files()}


def _rewrite_batch(
    table: Table,
    tasks: list[FileScanTask],
    target_file_size: int,
    max_attempts: int,
    result: CompactionResult,
) -> None:
    """Rewrite ``tasks`` (small files of some partitions) into target-size files, one commit."""
    from pyiceberg.exceptions import CommitFailedException, ValidationException
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan

    data = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(tasks)
    new_files = write_data_files(table, data, target_file_size)
    old_files = [t.file for t in tasks]
    old_paths = {f.file_path for f in old_files}
    for attempt in range(max_attempts):
        try:
            tx = table.transaction()
            props = {MAINTENANCE_PROPERTY: "compaction"}
            with tx.update_snapshot(snapshot_properties=props).overwrite() as rewrite:
                for f in old_files:
                    rewrite.delete_data_file(f)
                for f in new_files:
                    rewrite.append_data_file(f)
            tx.commit_transaction()
        except (CommitFailedException, ValidationException) as exc:
            result.conflicts += 1
            log.info("compaction of %s conflicted (%s), attempt %d", table.name(), exc, attempt)
            time.sleep(min(2.0, 0.05 * 2**attempt) * (1 + random.random()))
            table.refresh()
            if not old_paths <= _live_paths(table):
                # Someone else rewrote or deleted these files: drop our rewrite entirely.
                _delete_quietly(table, [f.file_path for f in new_files])
                log.info("files of %s changed under compaction; skipping them", table.name())
                return
            continue
        except BaseException:
            _delete_quietly(table, [f.file_path for f in new_files])
            raise
        result.commits += 1
        result.files_before += len(old_files)
        result.files_after += len(new_files)
        result.rows += data.num_rows
        result.bytes_before += sum(f.file_size_in_bytes for f in old_files)
        result.bytes_after += sum(f.file_size_in_bytes for f in new_files)
        return
    _delete_quietly(table, [f.file_path for f in new_files])
    raise MaintenanceError(
        f"compaction of {'.'.join(table.name())} lost {max_attempts} commit races in a row",
        hint="writers commit faster than compaction can; run it again, or with fewer "
        "--partitions-per-commit",
    )


def _delete_quietly(table: Table, paths: Iterable[str]) -> None:
    for p in paths:
        try:
            table.io.delete(p)
        except OSError:
            log.warning("could not delete %s", p, exc_info=True)


def compact_table(
    table: Table,
    *,
    target_file_size: int | None = None,
    min_input_files: int = 2,
    partitions_per_commit: int = 16,
    max_attempts: int = 10,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> CompactionResult:
    """Rewrite small files partition by partition; safe against concurrent appends.

    ``partitions_per_commit`` partitions share one commit (a commit per partition costs a
    metadata rewrite each; conflicts are per file, so batching never loses rows).
    """
    target = target_file_size or int(
        table.properties.get("write.target-file-size-bytes", DEFAULT_TARGET_FILE_SIZE)
    )
    result = CompactionResult(".".join(table.name()))
    table.refresh()
    plan, result.skipped_with_deletes = plan_compaction(
        table, target_file_size=target, min_input_files=min_input_files
    )
    keys = sorted(plan, key=repr)
    result.partitions = len(keys)
    if dry_run:
        result.files_before = sum(len(plan[k]) for k in keys)
        result.bytes_before = sum(t.file.file_size_in_bytes for k in keys for t in plan[k])
        result.rows = sum(t.file.record_count for k in keys for t in plan[k])
        return result
    step = max(1, partitions_per_commit)
    for i in range(0, len(keys), step):
        batch = [t for k in keys[i : i + step] for t in plan[k]]
        with service_errors():
            _rewrite_batch(table, batch, target, max_attempts, result)
        if progress:
            progress(min(i + step, len(keys)), len(keys))
    return result


# -- reachability -----------------------------------------------------------------------------


def _snapshot_files(table: Table, snapshot: Any) -> set[str]:
    """Manifest list, manifests, data and delete files live in ``snapshot``."""
    files = {snapshot.manifest_list}
    for manifest in snapshot.manifests(table.io):
        files.add(manifest.manifest_path)
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            files.add(entry.data_file.file_path)
    return files


def referenced_files(table: Table) -> set[str]:
    """Every file the table's metadata references (scheme stripped)."""
    meta = table.metadata
    files: set[str] = set()
    for snap in meta.snapshots:
        files |= _snapshot_files(table, snap)
    files.add(table.metadata_location)
    files |= {e.metadata_file for e in meta.metadata_log}
    files |= {s.statistics_path for s in meta.statistics}
    files |= {s.statistics_path for s in getattr(meta, "partition_statistics", [])}
    return {strip_scheme(f) for f in files}


# -- expiry -----------------------------------------------------------------------------------


@dataclass
class ExpiryResult:
    table: str
    snapshots_expired: int = 0
    snapshots_kept: int = 0
    files_deleted: int = 0
    expired_ids: list[int] = field(default_factory=list)


def expire_snapshots(
    table: Table,
    *,
    older_than: timedelta = DEFAULT_RETENTION,
    retain_last: int = 1,
    dry_run: bool = False,
    now: datetime | None = None,
) -> ExpiryResult:
    """Expire snapshots older than ``older_than`` (keeping the newest ``retain_last``).

    Then delete the files only the expired snapshots referenced. Time travel to an expired
    snapshot is no longer possible afterwards.
    """
    result = ExpiryResult(".".join(table.name()))
    with service_errors():
        table.refresh()
        cutoff_ms = int(((now or datetime.now(UTC)) - older_than).timestamp() * 1000)
        snaps = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms)
        keep_newest = {s.snapshot_id for s in snaps[-retain_last:]} if retain_last > 0 else set()
        protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
        expired = [
            s
            for s in snaps
            if s.timestamp_ms < cutoff_ms
            and s.snapshot_id not in keep_newest
            and s.snapshot_id not in protected
        ]
        result.expired_ids = [s.snapshot_id for s in expired]
        result.snapshots_expired = len(expired)
        result.snapshots_kept = len(snaps) - len(expired)
        if dry_run or not expired:
            return result
        candidates: set[str] = set()
        for snap in expired:
            candidates |= _snapshot_files(table, snap)
        table.maintenance.expire_snapshots().by_ids(result.expired_ids).commit()
        table.refresh()
        still = referenced_files(table)
        doomed = [f for f in candidates if strip_scheme(f) not in still]
        _delete_quietly(table, doomed)
        result.files_deleted = len(doomed)
    return result


# -- orphans ----------------------------------------------------------------------------------


@dataclass
class OrphanResult:
    table: str
    orphans: list[str] = field(default_factory=list)
    bytes: int = 0
    deleted: int = 0


def remove_orphan_files(
    table: Table,
    *,
    older_than: timedelta = DEFAULT_ORPHAN_AGE,
    dry_run: bool = False,
    now: datetime | None = None,
) -> OrphanResult:
    """Delete files under the table location that nothing references, older than the age."""
    from pyarrow import fs

    result = OrphanResult(".".join(table.name()))
    with service_errors():
        table.refresh()
        filesystem: Any = warehouse_filesystem(table)
        base = strip_scheme(table.location()).rstrip("/")
        infos = filesystem.get_file_info(
            fs.FileSelector(base, recursive=True, allow_not_found=True)
        )
        referenced = referenced_files(table)
        cutoff = (now or datetime.now(UTC)) - older_than
        scheme = table.location().split("://")[0] + "://" if "://" in table.location() else ""
        for info in infos:
            if info.type != fs.FileType.File or info.path in referenced:
                continue
            mtime = info.mtime
            if mtime is not None and mtime.tzinfo is None:
                mtime = mtime.replace(tzinfo=UTC)
            if mtime is None or mtime >= cutoff:
                continue
            result.orphans.append(scheme + info.path)
            result.bytes += info.size or 0
        if not dry_run and result.orphans:
            # A commit may have landed since the listing: never delete what is referenced now.
            table.refresh()
            referenced = referenced_files(table)
            doomed = [p for p in result.orphans if strip_scheme(p) not in referenced]
            _delete_quietly(table, doomed)
            result.deleted = len(doomed)
    return result


# -- everything -------------------------------------------------------------------------------


@dataclass
class MaintenanceReport:
    compaction: list[CompactionResult] = field(default_factory=list)
    expiry: list[ExpiryResult] = field(default_factory=list)
    orphans: list[OrphanResult] = field(default_factory=list)


def maintain(
    tables: Iterable[Table],
    *,
    target_file_size: int | None = None,
    retention: timedelta = DEFAULT_RETENTION,
    retain_last: int = 1,
    orphan_age: timedelta = DEFAULT_ORPHAN_AGE,
    partitions_per_commit: int = 16,
    dry_run: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> MaintenanceReport:
    """Compact, then expire, then remove orphans, table by table.

    ``progress(step, done, total)`` is called as work proceeds (step names the table and
    stage). Expiry runs after compaction so the replaced small files go with the snapshots.
    """
    report = MaintenanceReport()
    for table in tables:
        name = ".".join(table.name())

        def _compaction_progress(done: int, total: int, _name: str = name) -> None:
            if progress:
                progress(f"{_name}: compact", done, total)

        report.compaction.append(
            compact_table(
                table,
                target_file_size=target_file_size,
                partitions_per_commit=partitions_per_commit,
                dry_run=dry_run,
                progress=_compaction_progress,
            )
        )
        report.expiry.append(
            expire_snapshots(table, older_than=retention, retain_last=retain_last, dry_run=dry_run)
        )
        if progress:
            progress(f"{name}: expire", 1, 1)
        report.orphans.append(remove_orphan_files(table, older_than=orphan_age, dry_run=dry_run))
        if progress:
            progress(f"{name}: orphans", 1, 1)
    return report


def market_table_names() -> list[str]:
    return [t.name for t in TABLES]
