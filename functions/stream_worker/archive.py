"""The raw archive on EFS: every counted reading in exactly one gzip file of JSON lines.

Each batch that counts new readings writes them, one canonical reading (readings.Reading.data) per line and
sorted by device and time, into one file named after the batch's id (PostgreSQL's sequence
archive_batch_ids). A file is written in two steps around the batch's transaction, so that a crash at any
point leaves each counted reading in one published file and nothing else:

1. Inside the transaction: the file is written under `pending/<batch_id>.jsonl.gz` (a temporary file, synced,
   then renamed, so that a pending file is always whole), and the batch is recorded in archive_batches.
2. After COMMIT: the file is renamed to `<yyyy>/<mm>/<dd>/<hh>/<batch_id>.jsonl.gz`, the UTC hour of the
   batch's archive_batches.committed_at (its transaction's time).

A pending file is the one copy of its readings only if its transaction committed; otherwise the transaction
rolled back and the readings will be counted again, into another batch. Recovery (`settle`) therefore
publishes a pending file whose batch is in archive_batches and deletes the others. It only looks at files
older than the longest a batch's transaction can still commit after writing its file (see
stream_worker.worker.PENDING_MIN_AGE_SECONDS), so that it never deletes the file of a transaction in flight,
whichever worker runs it. Renames and deletions of the same file by two workers are harmless.

Files are deterministic (gzip's mtime is 0), so a file published twice, by a worker and by recovery, is the
same file.
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from readings import Reading

PENDING = "pending"
SUFFIX = ".jsonl.gz"
TEMPORARY_SUFFIX = ".tmp"


@dataclass(frozen=True)
class Settled:
    published: list[int]
    deleted: list[int]


class Archive:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pending = directory / PENDING

    def write_pending(self, batch_id: int, readings: Sequence[Reading]) -> Path:
        """Writes the batch's file under pending/, whole or not at all; returns its path."""
        lines = b"".join(reading.data() + b"\n" for reading in sorted(readings, key=lambda r: r.identity))
        self.pending.mkdir(parents=True, exist_ok=True)
        path = self.pending / f"{batch_id}{SUFFIX}"
        # A dot file: recovery takes it for no batch's file, and deletes it once it is stale.
        temporary = self.pending / f".{batch_id}{SUFFIX}{TEMPORARY_SUFFIX}"
        with temporary.open("wb") as file:
            file.write(gzip.compress(lines, mtime=0))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _fsync_directory(self.pending)
        return path

    def publish(self, batch_id: int, committed_at: datetime) -> Path:
        """Moves a committed batch's pending file to its hour's directory; returns its new path. Raises
        FileNotFoundError if there is no pending file (another worker published it)."""
        directory = self.directory / committed_at.astimezone(UTC).strftime("%Y/%m/%d/%H")
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{batch_id}{SUFFIX}"
        os.replace(self.pending / path.name, path)
        _fsync_directory(directory)
        return path

    def stale_batches(self, min_age_seconds: float) -> list[int]:
        """The batch ids of the pending files older than min_age_seconds. Stale temporary files, which
        never hold a committed batch's only copy (they are renamed before the batch is recorded), are
        deleted."""
        if not self.pending.is_dir():
            return []
        oldest = time.time() - min_age_seconds
        batch_ids = []
        for path in self.pending.iterdir():
            try:
                if path.stat().st_mtime > oldest:
                    continue
            except FileNotFoundError:  # settled by another worker meanwhile
                continue
            name = path.name
            if name.endswith(SUFFIX) and name.removesuffix(SUFFIX).isdigit():
                batch_ids.append(int(name.removesuffix(SUFFIX)))
            elif name.startswith(".") and name.endswith(TEMPORARY_SUFFIX):
                path.unlink(missing_ok=True)
        return sorted(batch_ids)

    def settle(self, batch_ids: Sequence[int], committed: Mapping[int, datetime]) -> Settled:
        """Publishes the pending files of the batches in `committed` (batch id -> committed_at) and deletes
        the others'."""
        settled = Settled(published=[], deleted=[])
        for batch_id in batch_ids:
            if batch_id in committed:
                try:
                    self.publish(batch_id, committed[batch_id])
                except FileNotFoundError:
                    continue
                settled.published.append(batch_id)
            else:
                (self.pending / f"{batch_id}{SUFFIX}").unlink(missing_ok=True)
                settled.deleted.append(batch_id)
        if settled.deleted:
            _fsync_directory(self.pending)
        return settled


def _fsync_directory(directory: Path) -> None:
    """Makes a rename or deletion in `directory` durable."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
