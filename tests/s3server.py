"""pytest plugin: a real S3 API endpoint for tests (no in-process mocking).

``s3_endpoint`` (session) is ``$APTSHIP_TEST_S3_ENDPOINT`` when set, else a
``moto_server`` subprocess on a free loopback port.  ``s3_bucket`` creates a fresh
bucket per test and empties and removes it afterwards; ``s3_storage`` is an
:class:`S3Storage` on that bucket under a random prefix.  Register it with
``pytest_plugins = ["tests.s3server"]`` in ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from publisher.config import StorageConfig
from publisher.storage.s3 import S3Storage, make_client
from tests.procs import free_port, stop, wait_until_up

ENDPOINT_ENV = "APTSHIP_TEST_S3_ENDPOINT"
# S3 requests for one incremental publish of one amd64 .deb (docs/s3.md, "Request budget")
PUBLISH_REQUEST_BUDGET = 28
REGION = "us-east-1"
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # moto accepts any credentials
    "AWS_DEFAULT_REGION": REGION,
}


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of an S3 API endpoint shared by the whole test session."""
    external = os.environ.get(ENDPOINT_ENV)
    with pytest.MonkeyPatch.context() as mp:
        if external:
            for name, value in DUMMY_CREDENTIALS.items():  # keep real ones if provided
                if name not in os.environ:
                    mp.setenv(name, value)
            yield external
            return
        # moto: force dummy credentials so real ones are never sent anywhere.
        for name, value in DUMMY_CREDENTIALS.items():
            mp.setenv(name, value)
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
            mp.delenv(name, raising=False)
        binary = Path(sys.executable).parent / "moto_server"
        port = free_port()
        log = tmp_path_factory.mktemp("moto") / "moto_server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(binary), "-H", "127.0.0.1", "-p", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            # Any HTTP answer means the server is up.
            wait_until_up(
                url, proc, log.read_text, timeout=30, up=lambda _status: True, name="moto_server"
            )
            yield url
        finally:
            stop(proc)


def _client(endpoint: str) -> Any:
    cfg = StorageConfig(type="s3", region=REGION, endpoint_url=endpoint, path_style=True)
    return make_client(cfg)


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Iterator[tuple[str, str]]:
    """A fresh, uniquely named bucket: ``(endpoint_url, bucket_name)``."""
    client = _client(s3_endpoint)
    bucket = f"aptship-test-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    try:
        yield s3_endpoint, bucket
    finally:
        with contextlib.suppress(Exception):
            uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            for up in uploads:
                client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for obj in page.get("Contents", []):
                    client.delete_object(Bucket=bucket, Key=obj["Key"])
            client.delete_bucket(Bucket=bucket)


@pytest.fixture
def s3_storage(s3_bucket: tuple[str, str]) -> S3Storage:
    """An S3Storage (built by ``from_config``) on a fresh bucket under a random prefix."""
    endpoint, bucket = s3_bucket
    cfg = StorageConfig(
        type="s3",
        bucket=bucket,
        prefix=f"repo-{uuid.uuid4().hex[:8]}",
        region=REGION,
        endpoint_url=endpoint,
        path_style=True,
    )
    return S3Storage.from_config(cfg)
