"""Findings 4, 5 and 6: bounded request bodies, no oracles, 4xx instead of 500s."""

from __future__ import annotations

import contextlib
import select
import time
from pathlib import Path

import pytest
import requests

from publisher.audit import read_events_page
from publisher.storage.local import LocalStorage
from tests.debs import build_deb
from tests.security.conftest import (
    UPLOAD_LIMIT,
    Hostile,
    assert_workers_small,
    connect,
    wait_closed,
)


def test_upload_limit_counts_every_multipart_part(hostile: Hostile) -> None:
    """15 parts just under the limit each: refused once the request passes it."""
    part = b"x" * (UPLOAD_LIMIT - 100 * 1024)
    body_part = (
        b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.deb"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + part + b"\r\n"
    )
    total = 15 * len(body_part) + len(b"--xx--\r\n")
    sock = connect(hostile)
    sent = 0
    answer = b""
    try:
        sock.sendall(
            b"POST /api/v1/channels/dev/packages HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {hostile.secrets['dev-publisher']}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=xx\r\n"
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        with contextlib.suppress(OSError):
            for _ in range(15):
                sock.sendall(f"{len(body_part):x}\r\n".encode() + body_part + b"\r\n")
                sent += len(body_part)
                if select.select([sock], [], [], 0.05)[0]:
                    break  # the server answered while the body was still coming
        answer = wait_closed(sock, time.monotonic() + 10)
    finally:
        sock.close()
    assert sent < total
    assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 413")), answer[:300]
    assert not list(hostile.upload_dir.iterdir())  # nothing left on disk


def test_upload_with_content_length_past_the_limit(hostile: Hostile, tmp_path: Path) -> None:
    big = tmp_path / "big.deb"
    big.write_bytes(b"!<arch>\n" + b"x" * (UPLOAD_LIMIT + 1))
    answer = requests.post(
        f"{hostile.url}/api/v1/channels/dev/packages",
        headers=hostile.auth("dev-publisher"),
        data=big.read_bytes(),
        timeout=30,
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "too_large"


def test_deeply_nested_json_is_a_400(hostile: Hostile) -> None:
    body = "[" * 30_000 + "]" * 30_000  # deeper than Python's recursion limit
    answer = requests.post(
        f"{hostile.url}/api/v1/channels/staging/promote",
        headers={**hostile.auth("staging-promoter"), "Content-Type": "application/json"},
        data=body,
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    nested = '{"from": "dev", "package": "alpha", "x": ' + "[" * 40 + "]" * 40 + "}"
    answer2 = requests.post(
        f"{hostile.url}/api/v1/channels/staging/promote",
        headers={**hostile.auth("admin"), "Content-Type": "application/json"},
        data=nested,
        timeout=30,
    )
    assert answer2.status_code == 400, answer2.text
    assert answer2.json()["error"]["code"] == "json_too_deep"
    assert "Traceback" not in hostile.server.logs()


def test_big_json_body_is_refused_unread(hostile: Hostile) -> None:
    sock = connect(hostile)
    try:
        sock.sendall(
            b"POST /api/v1/channels/staging/promote HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {hostile.secrets['staging-promoter']}\r\n".encode()
            + f"Content-Type: application/json\r\nContent-Length: {200 * 1024**2}\r\n\r\n".encode()
            + b'{"from": "'
            + b"a" * 100_000
        )
        answer = wait_closed(sock, time.monotonic() + 10)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"body_too_large" in answer
    assert_workers_small(hostile.server)


def test_promote_dry_run_needs_the_source_channel(hostile: Hostile) -> None:
    """Finding 5: a staging-only promoter cannot read dev's pins through a dry run."""
    url = f"{hostile.url}/api/v1/channels/staging"
    headers = hostile.auth("staging-promoter")
    for body in (
        {"all": True, "from": "dev", "dry_run": True},
        {"package": "alpha", "from": "dev", "dry_run": True},
    ):
        answer = requests.post(f"{url}/promote", json=body, headers=headers, timeout=30)
        assert answer.status_code == 403, (body, answer.text)
        assert "alpha" not in answer.text
    assert requests.get(f"{url}/diff?from=dev", headers=headers, timeout=30).status_code == 403
    admin = requests.post(
        f"{url}/promote",
        json={"all": True, "from": "dev", "dry_run": True},
        headers=hostile.auth("admin"),
        timeout=30,
    )
    assert admin.status_code == 200 and "alpha" in admin.text


def test_pool_answers_alike_for_hidden_and_missing_files(hostile: Hostile) -> None:
    """Finding 6: a dev reader cannot tell prod's files from files that do not exist."""
    headers = hostile.auth("dev-reader")
    hidden_key = hostile.published["secret"]
    missing_key = hidden_key.replace("1.0-1", "7.7-7")
    hidden = requests.get(f"{hostile.url}/{hidden_key}", headers=headers, timeout=30)
    missing = requests.get(f"{hostile.url}/{missing_key}", headers=headers, timeout=30)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.text.replace(hidden_key, "K") == missing.text.replace(missing_key, "K")
    own = requests.get(f"{hostile.url}/{hostile.published['alpha']}", headers=headers, timeout=30)
    assert own.status_code == 200


def test_not_found_under_dists_names_no_server_directory(hostile: Hostile) -> None:
    headers = hostile.auth("dev-reader")
    for path in ("/dists/dev/nope", "/dists/dev/main/binary-amd64/Packages.bz2"):
        answer = requests.get(hostile.url + path, headers=headers, timeout=30)
        assert answer.status_code == 404
        assert str(hostile.root) not in answer.text
        assert "/repo" not in answer.text


@pytest.mark.parametrize(
    "path",
    ["/dists/dev/" + "a" * 300, "/pool/main/a/" + "b" * 300 + ".deb", "/dists/dev/" + "é" * 200],
)
def test_overlong_path_segments_are_4xx(hostile: Hostile, path: str) -> None:
    answer = requests.get(hostile.url + path, headers=hostile.auth("dev-reader"), timeout=30)
    assert 400 <= answer.status_code < 500, answer.text
    assert "Traceback" not in hostile.server.logs()
    assert '"code": "internal"' not in hostile.server.logs()


def test_overlong_upload_file_name_is_fine(hostile: Hostile, tmp_path: Path) -> None:
    deb = build_deb(tmp_path, "svc-longname", "1.0-1")
    with deb.open("rb") as fh:
        answer = requests.post(
            f"{hostile.url}/api/v1/channels/dev/packages",
            headers=hostile.auth("dev-publisher"),
            files={"file": ("x" * 300 + ".deb", fh)},
            timeout=30,
        )
    assert answer.status_code == 201, answer.text
    assert '"code": "internal"' not in hostile.server.logs()


def test_history_is_paged_newest_first(hostile: Hostile) -> None:
    url = f"{hostile.url}/api/v1/history"
    headers = hostile.auth("admin")
    everything = []
    cursor: str | None = None
    for _ in range(20):
        params = {"limit": "1"} | ({"before": cursor} if cursor else {})
        page = requests.get(url, params=params, headers=headers, timeout=30)
        assert page.status_code == 200
        everything += page.json()
        link = page.headers.get("Link")
        if link is None:
            break
        cursor = requests.utils.parse_header_links(link)[0]["url"].split("before=")[1]
    stamps = [row["at"] for row in everything]
    assert stamps == sorted(stamps, reverse=True) and len(everything) >= 3
    assert requests.get(url, params={"limit": "51"}, headers=headers, timeout=30).status_code == 400
    # a reader sees only its channels, page after page
    rows = requests.get(url, headers=hostile.auth("dev-reader"), timeout=30).json()
    assert rows and {row["channel"] for row in rows} == {"dev"}


class CountingStorage(LocalStorage):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads = 0

    def read_bytes(self, key: str) -> bytes:
        self.reads += 1
        return super().read_bytes(key)


def test_a_history_page_does_not_read_the_whole_log(hostile: Hostile) -> None:
    storage = CountingStorage(hostile.root / "repo")
    total = sum(1 for _ in storage.list(".aptship/audit/"))
    assert total >= 3
    rows, cursor = read_events_page(storage, channels={"dev", "staging", "prod"}, limit=1)
    assert len(rows) == 1 and cursor is not None
    assert storage.reads == 1


def test_a_sparse_history_filter_stops_at_the_scan_limit(hostile: Hostile) -> None:
    storage = CountingStorage(hostile.root / "repo")
    rows, cursor = read_events_page(storage, channels={"nowhere"}, limit=10, scan_max=2)
    assert (rows, storage.reads) == ([], 2)
    assert cursor is not None  # more to scan: the client may go on
