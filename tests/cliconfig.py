"""A real ``aptship.toml`` on either backend, for tests that run the CLI as CI would.

``storage_table`` gives the ``[storage]`` table of a fresh repository (a local
directory, or a fresh bucket on the test S3 endpoint under a random prefix);
``write_config`` writes the whole file (credentials come from the environment).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from publisher.config import StorageConfig
from publisher.storage.s3 import make_client
from tests.s3server import REGION
from tests.tomlfile import write_toml

DEV_ONLY: dict[str, Any] = {"dev": {"description": "dev builds"}}


def write_config(
    path: Path,
    storage: dict[str, Any],
    gpg_key: tuple[Path, str],
    channels: dict[str, Any] | None = None,
) -> Path:
    """A real aptship.toml, as CI would have it (credentials come from the environment)."""
    home, fpr = gpg_key
    return write_toml(
        path,
        {
            "repository": {"origin": "aptship-test", "label": "aptship-test"},
            "storage": storage,
            "signing": {"gnupghome": str(home), "keys": [fpr]},
            "channels": DEV_ONLY if channels is None else channels,
        },
    )


def storage_table(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The [storage] table of a fresh repository on ``backend`` ("local" or "s3")."""
    if backend == "local":
        return {"type": "local", "path": str(tmp_path / "repo")}
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    # Registered after s3_bucket, so it runs before that fixture's one-by-one cleanup.
    request.addfinalizer(lambda: empty_bucket(endpoint, bucket))
    return {
        "type": "s3",
        "bucket": bucket,
        "prefix": f"conc-{uuid.uuid4().hex[:8]}",
        "region": REGION,
        "endpoint_url": endpoint,
        "path_style": True,
    }


def empty_bucket(endpoint: str, bucket: str) -> None:
    """Delete every object, 1000 per request (publishing leaves ~10 objects per .deb)."""
    cfg = StorageConfig(type="s3", region=REGION, endpoint_url=endpoint, path_style=True)
    client = make_client(cfg)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
