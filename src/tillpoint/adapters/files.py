"""Where an export goes: a local file, or an object in S3-compatible storage (boto3), and the
typed Parquet encoding of export rows (pyarrow).

Neither holds the file in memory. A local file is written beside its final path and renamed
into place when complete. An object is written to a spooled temporary file (memory up to
`SPOOL_BYTES`, then disk) and uploaded when complete with boto3's managed transfer, which sends
a large file as a multipart upload read part by part from disk: a failed export never leaves a
partial file or object under the name asked for.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import AsyncIterable, Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Final

# Arrow's default allocator (mimalloc or jemalloc) keeps what a written row group freed, so a
# long Parquet export grows by tens of MB; the system allocator gives it back. Arrow reads this
# once, when it loads, and also allocates outside the pool a writer is handed.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from tillpoint.service.exports import Column, Record, batches
from tillpoint.service.ports import ExportTargetFailed

SPOOL_BYTES: Final = 8 * 1024 * 1024
PART_BYTES: Final = 16 * 1024 * 1024  # multipart part size (S3 allows 5 MiB to 5 GiB)
ROW_GROUP_ROWS: Final = 10_000  # rows per Parquet row group, the most held in memory at once

_ARROW_TYPES: Final = {
    "string": pa.string(),
    "int64": pa.int64(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


def s3_location(target: str) -> tuple[str, str] | None:
    """`(bucket, key)` of an `s3://bucket/key` target, None for a local path."""
    if not target.startswith("s3://"):
        return None
    bucket, _, key = target.removeprefix("s3://").partition("/")
    if not bucket or not key or key.endswith("/"):
        raise ExportTargetFailed(f"{target!r} names no object: use s3://bucket/key")
    return bucket, key


@contextlib.contextmanager
def export_target(
    target: str,
    *,
    content_type: str,
    s3_endpoint: str = "",
    on_upload: Callable[[int], None] | None = None,
) -> Iterator[IO[bytes]]:
    """A binary file to write the export to; on a clean exit it is in place at `target` (a
    path, or `s3://bucket/key` uploaded through `s3_endpoint`, empty for AWS). `on_upload` is
    told the bytes sent as an upload goes."""
    location = s3_location(target)
    if location is None:
        with _local(Path(target)) as file:
            yield file
        return
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        yield spool
        spool.seek(0)
        _upload(spool, *location, content_type, s3_endpoint, on_upload)


@contextlib.contextmanager
def _local(path: Path) -> Iterator[IO[bytes]]:
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
        with partial.open("wb") as file:
            yield file
        os.replace(partial, path)
    except OSError as exc:
        raise ExportTargetFailed(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


def _upload(
    file: IO[bytes],
    bucket: str,
    key: str,
    content_type: str,
    endpoint: str,
    on_upload: Callable[[int], None] | None,
) -> None:
    try:
        client = boto3.client("s3", endpoint_url=endpoint or None)
        client.upload_fileobj(
            file,
            bucket,
            key,
            ExtraArgs={"ContentType": content_type},
            Callback=on_upload,
            Config=TransferConfig(multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES),
        )
    except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
        raise ExportTargetFailed(f"cannot upload to s3://{bucket}/{key}: {exc}") from exc


def arrow_schema(columns: Sequence[Column]) -> pa.Schema:
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.type], nullable=c.nullable) for c in columns])


async def write_parquet(
    file: IO[bytes],
    columns: Sequence[Column],
    records: AsyncIterable[Record],
    *,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> None:
    """The records as a Parquet file of typed columns (int64 minor units, UTC timestamps, text
    for the rest, major-unit amounts included: their decimals differ by currency), one row group
    per `row_group_rows` records."""
    schema = arrow_schema(columns)
    pool = pa.system_memory_pool()
    with pq.ParquetWriter(file, schema, memory_pool=pool) as writer:
        async for batch in batches(records, row_group_rows):
            arrays: list[Any] = [
                pa.array([record[i] for record in batch], type=field.type, memory_pool=pool)
                for i, field in enumerate(schema)
            ]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            del batch, arrays
