"""Issue 4 acceptance: transient S3 faults at every request of a publish.

The requests go to a real S3 API (moto_server); a botocore ``before-send`` handler
replaces the k-th HTTP request with a fault instead of sending it: a 503 SlowDown, a
500 InternalError, a connection closed mid-request (what urllib3 reports for a
reset), or a raw ``ConnectionResetError``.  For every k from 1 to the number of
requests of one publish:

* with botocore's retries (the client aptship builds: 4 attempts), a retryable
  fault is retried and the publish succeeds;
* without retries (1 attempt), the publish fails with a :class:`StorageError`
  whose message names the S3 object, never with a raw botocore exception, unless
  the fault comes after the commit (audit event, render): then the publish has
  succeeded and only warns (docs/operations.md).

Either way `verify` is then clean, or only reports what `reindex` repairs; running
the same publish again (what CI does) succeeds, and versions published before stay
listed and downloadable.

A last test lets the k-th request reach S3 and loses its response instead, so that
botocore retries a write that already took effect.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError
from botocore.httpsession import URLLib3Session

from publisher.config import StorageConfig
from publisher.errors import AptshipError, StorageError
from publisher.repo import Repository
from publisher.storage.s3 import S3Storage, make_client
from publisher.verify import verify
from tests.aptenv import AptEnv
from tests.repo_http import index_packages
from tests.s3proxy import serve_storage
from tests.s3server import PUBLISH_REQUEST_BUDGET, REGION

pytestmark = pytest.mark.e2e

KINDS = ("503", "500", "closed", "reset")
RETRYABLE = {"503", "500", "closed"}  # what botocore's standard retry mode retries


class _Body:
    """The ``raw`` of a fake AWSResponse: botocore reads it through ``stream()``."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Any:
        yield self.data


class FaultyS3(S3Storage):
    """An S3Storage whose client fails its k-th HTTP request after :meth:`arm`.

    The fault is produced at the HTTP level (botocore ``before-send``), so retries,
    error parsing and translation all run exactly as for a real fault.
    """

    def __init__(self, endpoint: str, bucket: str, prefix: str, *, max_attempts: int) -> None:
        cfg = StorageConfig(
            type="s3", bucket=bucket, region=REGION, endpoint_url=endpoint, path_style=True
        )
        client = make_client(cfg, max_attempts=max_attempts)
        client.meta.events.register("before-send.s3", self._inject)
        super().__init__(client, bucket, prefix)
        self._countdown = 0
        self._kind = ""
        self.fired: list[str] = []
        self._http: URLLib3Session | None = None  # "lost": sends behind botocore's back

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def arm(self, k: int, kind: str) -> None:
        self._countdown, self._kind, self.fired = k, kind, []

    def _inject(self, request: Any, **_: Any) -> AWSResponse | None:
        if self._countdown <= 0:
            return None
        self._countdown -= 1
        if self._countdown:
            return None
        self.fired.append(f"{self._kind} {request.method} {request.url}")
        if self._kind == "lost":  # the server applies the request; its answer never arrives
            self._http = self._http or URLLib3Session()
            self._http.send(request).content  # noqa: B018 - read the whole answer
            raise ConnectionClosedError(endpoint_url=request.url)
        if self._kind == "closed":
            raise ConnectionClosedError(endpoint_url=request.url)
        if self._kind == "reset":
            raise ConnectionResetError(104, "Connection reset by peer")
        code, message = {
            "503": ("SlowDown", "Please reduce your request rate."),
            "500": ("InternalError", "We encountered an internal error. Please try again."),
        }[self._kind]
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>fault</RequestId></Error>"
        ).encode()
        status = int(self._kind)
        return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _Body(body))


@pytest.mark.parametrize("attempts", [4, 1], ids=["botocore-retries", "no-retries"])
def test_fault_at_every_request_of_a_publish(
    attempts: int,
    make_repo: Callable[..., Repository],
    s3_bucket: tuple[str, str],
    debs: Callable[..., Path],
    tmp_path: Path,
) -> None:
    endpoint, bucket = s3_bucket
    storage = FaultyS3(endpoint, bucket, f"faults-{uuid.uuid4().hex[:8]}", max_attempts=attempts)
    repo = make_repo(channels={"dev": {}}, storage=storage)
    old = {"1.0-1": debs("base", "1.0-1"), "2.0-1": debs("base", "2.0-1")}
    for deb in old.values():
        repo.publish("dev", [deb])
    start = storage.request_count
    Repository(repo.config, storage).publish("dev", [debs("probe", "1.0-1")])
    total = storage.request_count - start
    assert 10 < total <= PUBLISH_REQUEST_BUDGET, total

    outcomes: Counter[str] = Counter()
    for k in range(1, total + 2):
        kind = KINDS[k % len(KINDS)]
        deb = debs("app", f"1.{k}-1")  # a new version each time (keep = 10 bounds N)
        storage.arm(k, kind)
        try:
            Repository(repo.config, storage).publish("dev", [deb])  # a fresh publisher
            failure = None
        except Exception as exc:  # the point: it must be an AptshipError, checked below
            failure = exc
        fired = storage.fired
        storage.arm(0, "")
        if not fired:
            assert k > total - 2, f"fault {k} never fired"  # a shorter publish
            assert failure is None
            outcomes["no fault"] += 1
            continue
        if failure is None and attempts == 1:
            # Committed means succeeded: a fault after the head swap (audit event,
            # render) is a warning, and the render is left to reindex (below).
            after_commit = (
                "/.aptship/audit/",
                "/.aptship/webhooks/",
                "/dists/",
                "published.json",
                "sweep.json",
            )
            assert any(part in fired[0] for part in after_commit), (k, fired)
            outcomes[f"{kind}: after the commit, warning"] += 1
        elif failure is None:
            outcomes[f"{kind}: retried, published"] += 1
        else:
            assert isinstance(failure, AptshipError), (k, fired, repr(failure))
            assert isinstance(failure, StorageError), (k, fired, repr(failure))
            assert f"s3://{bucket}/" in failure.message, failure.message
            assert "Traceback" not in failure.message
            outcomes[f"{kind}: {type(failure).__name__}"] += 1
            if attempts > 1:
                assert kind not in RETRYABLE, (k, fired, failure.message)

        problems = verify(repo, fast=True)
        if problems:
            outcomes["repaired by reindex"] += 1
            repo.reindex()
            assert verify(repo, fast=True) == [], (k, fired, problems)
        if failure is not None:  # CI runs the same publish again
            again = Repository(repo.config, storage).publish("dev", [deb])
            assert again[0]["status"] in ("added", "unchanged")
        listed = index_packages(storage)
        assert f"app 1.{k}-1" in listed
        assert {"base 1.0-1", "base 2.0-1"} <= set(listed)

    assert outcomes["no fault"] <= 2, outcomes
    assert verify(repo) == []
    print(f"{attempts} attempt(s), {total} requests per publish: {dict(outcomes)}")

    # The versions published before all this are still downloadable by apt.
    apt = AptEnv(tmp_path / "apt")
    with serve_storage(storage) as url:
        key = tmp_path / "key.asc"
        key.write_bytes(storage.read_bytes("archive-keyring.asc"))
        apt.add_source(url, "dev", key)
        update = apt.update()
        assert update.returncode == 0, update.output
        for version, deb in old.items():
            got = apt.download(f"base={version}")
            assert got.returncode == 0, got.output
            fetched = list(apt.archives.glob("base_*.deb"))
            assert [f.read_bytes() for f in fetched] == [deb.read_bytes()]
            fetched[0].unlink()


def test_lost_responses_are_retried_without_losing_anything(
    make_repo: Callable[..., Repository],
    s3_bucket: tuple[str, str],
    debs: Callable[..., Path],
) -> None:
    """The k-th request reaches S3 and is applied, but its response is lost: botocore
    retries a request that already took effect (a create-only or If-Match write then
    meets its own result).  Every publish must still succeed, report "added", and be
    recorded exactly once in the audit log."""
    endpoint, bucket = s3_bucket
    storage = FaultyS3(endpoint, bucket, f"lost-{uuid.uuid4().hex[:8]}", max_attempts=4)
    try:
        repo = make_repo(channels={"dev": {}}, storage=storage)
        repo.publish("dev", [debs("base", "1.0-1")])
        start = storage.request_count
        Repository(repo.config, storage).publish("dev", [debs("app", "1.0-1")])
        total = storage.request_count - start
        fired = []
        for k in range(1, total + 2):
            version = f"1.{k}-1"
            storage.arm(k, "lost")
            result = Repository(repo.config, storage).publish("dev", [debs("app", version)])
            now = storage.fired
            fired += now
            storage.arm(0, "")
            assert result[0]["status"] == "added", (k, now)
            assert result[0]["pinned"] is True, (k, now)
            problems = verify(repo, fast=True)
            assert problems == [], (k, now, problems)
            events = [r for r in repo.history("dev", "app") if r.get("version") == version]
            assert [e["action"] for e in events] == ["publish"], (k, now, events)
            assert f"app {version}" in index_packages(storage)
        assert len(fired) >= total
    finally:
        storage.close()
