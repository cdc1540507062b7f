"""`tillpoint export ledger`: the same file as the API's, written by the command to a local file
or uploaded to S3-compatible storage (a moto server on loopback), and as typed Parquet."""

from __future__ import annotations

import csv
import io
import os
import secrets
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from tests.api.conftest import Api
from tests.api.test_exports import HEADER, export, now, parse
from tests.conftest import free_port
from tests.support.server import TILLPOINT, server_env
from tillpoint.domain.timestamps import rfc3339

AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(s3_endpoint: str) -> Iterator[tuple[Any, str]]:
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"],
        region_name=AWS["AWS_DEFAULT_REGION"],
    )
    name = f"tillpoint-exports-{secrets.token_hex(6)}"
    client.create_bucket(Bucket=name)
    try:
        yield client, name
    finally:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=item["Key"])
        client.delete_bucket(Bucket=name)


def run_export(
    database_url: str, workdir: Path, *args: str, **settings: str
) -> subprocess.CompletedProcess[str]:
    env = {**server_env(database_url, workdir / ".tillpoint", **settings), **AWS}
    env.pop("AWS_PROFILE", None)
    return subprocess.run(
        [TILLPOINT, "export", "ledger", *args],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )


def window_args(start: datetime, end: datetime) -> list[str]:
    return ["--from", rfc3339(start), "--to", rfc3339(end)]


async def _movements(api: Api) -> tuple[datetime, datetime]:
    """A window with a sale, a partial refund and a declined payment in it."""
    start = now(api)
    paid = await api.confirmed("42.00")
    refund = await api.post(
        f"/api/v1/payments/{paid['payment_id']}/refund",
        {"amount": "2.50", "reason": 'late, "cold"\nsecond line'},
        key="test-admin-key-0123456789",
    )
    assert refund.status_code == 201, refund.text
    await api.confirmed("1000", "JPY")
    order_id = await api.order("3.00")
    declined = await api.payment(order_id, "3.00", method={"token": "pm_card_chargeDeclined"})
    assert (await api.confirm(declined["payment_id"])).status_code == 402
    return start, now(api)


class TestExportCommand:
    async def test_the_file_is_the_apis_file(
        self, api: Api, database_url: str, tmp_path: Path
    ) -> None:
        start, end = await _movements(api)
        out = tmp_path / "ledger.csv"
        done = run_export(database_url, tmp_path, *window_args(start, end), "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert f'"out": "{out}"' in done.stdout
        served = await export(api, start, end)
        assert out.read_bytes() == served.content
        header, rows = parse(served)
        assert header == HEADER
        assert len(rows) >= 4  # the sale, its refund, the JPY sale, the declined sale
        assert f'"exported": {len(rows)}' in done.stdout
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []

    async def test_it_uploads_to_s3_compatible_storage(
        self,
        api: Api,
        database_url: str,
        tmp_path: Path,
        s3_endpoint: str,
        bucket: tuple[Any, str],
    ) -> None:
        client, name = bucket
        start, end = await _movements(api)
        key = "ledger/2026-11.csv"
        done = run_export(
            database_url,
            tmp_path,
            *window_args(start, end),
            "--out",
            f"s3://{name}/{key}",
            export_s3_endpoint=s3_endpoint,
        )
        assert done.returncode == 0, done.stderr
        stored = client.get_object(Bucket=name, Key=key)
        assert stored["ContentType"] == "text/csv; charset=utf-8"
        assert stored["Body"].read() == (await export(api, start, end)).content

    async def test_parquet_holds_the_same_rows_typed(
        self, api: Api, database_url: str, tmp_path: Path
    ) -> None:
        start, end = await _movements(api)
        out = tmp_path / "ledger.parquet"
        done = run_export(
            database_url,
            tmp_path,
            *window_args(start, end),
            "--out",
            str(out),
            "--format",
            "parquet",
        )
        assert done.returncode == 0, done.stderr
        table = pq.read_table(out)
        assert table.schema.names == HEADER
        assert table.schema.field("amount_minor").type == pa.int64()
        assert table.schema.field("settled_minor").type == pa.int64()
        assert table.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
        assert table.schema.field("amount").type == pa.string()
        _, rows = parse(await export(api, start, end))
        assert [_as_csv(row) for row in table.to_pylist()] == rows

    async def test_a_missing_bucket_fails_cleanly(
        self, database_url: str, tmp_path: Path, s3_endpoint: str
    ) -> None:
        absent = f"tillpoint-absent-{secrets.token_hex(6)}"
        done = run_export(
            database_url,
            tmp_path,
            "--from",
            "2026-11-01",
            "--to",
            "2026-12-01",
            "--out",
            f"s3://{absent}/ledger.csv",
            export_s3_endpoint=s3_endpoint,
        )
        assert done.returncode == 1, done.stderr
        assert f"cannot upload to s3://{absent}/ledger.csv" in done.stderr
        assert "Traceback" not in done.stderr

    @pytest.mark.parametrize(
        ("window", "message"),
        [
            (["--from", "2026-12-01", "--to", "2026-11-01"], "later than created_from"),
            (["--from", "2026-11-01T00:00:00", "--to", "2026-12-01"], "no time zone"),
            (["--from", "last month", "--to", "2026-12-01"], "is not a date"),
        ],
    )
    def test_a_bad_window_is_refused(
        self, database_url: str, tmp_path: Path, window: list[str], message: str
    ) -> None:
        out = tmp_path / "ledger.csv"
        done = run_export(database_url, tmp_path, *window, "--out", str(out))
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert not out.exists()

    def test_an_unwritable_path_fails_cleanly(self, database_url: str, tmp_path: Path) -> None:
        out = tmp_path / "missing" / "ledger.csv"
        done = run_export(
            database_url, tmp_path, "--from", "2026-11-01", "--to", "2026-12-01", "--out", str(out)
        )
        assert done.returncode == 1, done.stderr
        assert "cannot write" in done.stderr
        assert "Traceback" not in done.stderr
        assert not os.path.exists(out.parent)


def _as_csv(row: dict[str, Any]) -> dict[str, str]:
    """A Parquet row as the CSV writes it."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n").writerow(
        [
            "" if value is None else rfc3339(value) if isinstance(value, datetime) else str(value)
            for value in row.values()
        ]
    )
    (parsed,) = csv.DictReader(io.StringIO(text.getvalue(), newline=""), fieldnames=list(row))
    return parsed
