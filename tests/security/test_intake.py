"""Findings 2 and 3: control-member bombs and control text dpkg reads differently.

Published through the real server's API with a publish token, as CI would.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests

from publisher.config import LimitsConfig
from publisher.debfile import inspect_deb
from publisher.errors import ControlRejected
from tests.security.conftest import LIMITS, Hostile, assert_workers_small
from tests.security.crafted import HEAD, bomb_deb, crafted_deb


def publish(
    h: Hostile, deb: Path, who: str = "dev-publisher", channel: str = "dev"
) -> requests.Response:
    with deb.open("rb") as fh:
        return requests.post(
            f"{h.url}/api/v1/channels/{channel}/packages",
            headers=h.auth(who),
            files={"file": (deb.name, fh)},
            timeout=60,
        )


def dev_index(h: Hostile) -> bytes:
    return (
        h.root / "repo" / "dists" / "dev" / "main" / "binary-amd64" / "Packages.gz"
    ).read_bytes()


def test_control_member_bomb_is_refused_with_bounded_memory(
    hostile: Hostile, tmp_path: Path
) -> None:
    before = dev_index(hostile)
    deb = bomb_deb(tmp_path / "bomb_1.0-1_all.deb", 200 * 1024**2)  # 200 MB Description
    assert deb.stat().st_size < 64 * 1024
    answer = publish(hostile, deb)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "control_too_large"
    assert "limits.max_control_bytes" in answer.json()["error"]["message"]
    assert dev_index(hostile) == before
    assert_workers_small(hostile.server)


def test_overlong_control_field_is_refused(hostile: Hostile, tmp_path: Path) -> None:
    long = b"Description: x\n" + b" " + b"b" * LIMITS["max_control_field_bytes"] + b"\n"
    answer = publish(hostile, crafted_deb(tmp_path / "long.deb", HEAD + long))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "control_too_large"
    assert "limits.max_control_field_bytes" in answer.json()["error"]["message"]


SMUGGLED = {
    "bare CR": b"Description: x\rPackage: evilname\rVersion: 9.9-9\n",
    "CR LF": b"Description: x\r\nPackage: evilname\n",
    "NUL": b"Description: x\x00\nPackage: evilname\n",
    "form feed": b"Description: x\x0cPackage: evilname\x0cVersion: 9.9-9\n",
    "vertical tab": b"Description: x\x0bPackage: evilname\n",
    "NEL": "Description: x\u0085Package: evilname\n".encode(),
    "LINE SEPARATOR": "Description: x\u2028Package: evilname\n".encode(),
    "duplicate field": b"Description: x\nPackage: evilname\n",
    "second paragraph": b"Description: x\n\nPackage: evilname\n",
    "not UTF-8": b"Description: \xff\xfe\n",
}


@pytest.mark.parametrize("tail", SMUGGLED.values(), ids=SMUGGLED.keys())
def test_control_text_dpkg_reads_differently_is_refused(
    hostile: Hostile, tmp_path: Path, tail: bytes
) -> None:
    before = dev_index(hostile)
    deb = crafted_deb(tmp_path / "innocent_1.0-1_all.deb", HEAD + tail, "xz")
    answer = publish(hostile, deb)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "control_rejected", answer.text
    assert dev_index(hostile) == before


def test_bare_cr_really_splits_the_identity() -> None:
    """What the refused case above would have done: dpkg and Python disagree."""
    text = HEAD + SMUGGLED["bare CR"]
    python_view = dict(line.split(": ", 1) for line in text.decode().splitlines() if ": " in line)
    assert python_view["Package"] == "evilname"  # str.splitlines splits on a bare \r


def test_dpkg_reads_the_crafted_identity_as_innocent(tmp_path: Path) -> None:
    deb = crafted_deb(tmp_path / "cr.deb", HEAD + SMUGGLED["bare CR"])
    out = subprocess.run(
        ["dpkg-deb", "--field", str(deb), "Package", "Version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == "Package: innocent\nVersion: 1.0-1\n"


def test_identity_is_cross_checked_with_dpkg_deb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deb = crafted_deb(tmp_path / "ok.deb", HEAD + b"Description: fine\n long text\n")
    info = inspect_deb(deb, LimitsConfig(dpkg_check="always"))
    assert (info.package, info.version, info.architecture) == ("innocent", "1.0-1", "all")
    assert info.control.endswith("Description: fine\n long text\n")
    # a disagreement (whatever causes it) is refused
    monkeypatch.setattr(
        "publisher.debfile.dpkg_identity",
        lambda path, label: {"Package": "other", "Version": "1.0-1", "Architecture": "all"},
    )
    with pytest.raises(ControlRejected, match="dpkg reads this package as"):
        inspect_deb(deb, LimitsConfig(dpkg_check="always"))
    assert inspect_deb(deb, LimitsConfig(dpkg_check=False)).package == "innocent"


def test_auto_cross_checks_only_what_dpkg_deb_might_read_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default ("auto"): a canonical archive is read in process only; an archive
    dpkg-deb would not build is cross-checked, and a disagreement is refused."""
    deb = crafted_deb(tmp_path / "ok.deb", HEAD + b"Description: fine\n long text\n")
    odd = tmp_path / "odd.deb"
    data = deb.read_bytes()
    odd.write_bytes(data + b"_extra/         0           0     0     100644  0         `\n")
    calls: list[str] = []
    monkeypatch.setattr(
        "publisher.debfile.dpkg_identity",
        lambda path, label: (
            calls.append(label) or {"Package": "other", "Version": "1.0-1", "Architecture": "all"}
        ),
    )
    assert LimitsConfig().dpkg_mode == "auto"
    assert inspect_deb(deb, LimitsConfig()).package == "innocent"
    assert calls == []
    with pytest.raises(ControlRejected, match="dpkg reads this package as"):
        inspect_deb(odd, LimitsConfig())
    assert calls == ["odd.deb"]


def test_real_packages_still_publish(hostile: Hostile, tmp_path: Path) -> None:
    from tests.debs import build_deb

    out = tmp_path / "built"
    out.mkdir()
    for compression in ("gzip", "xz", "zstd"):
        deb = build_deb(out, f"fine-{compression}", "1.0-1", compression=compression)
        answer = publish(hostile, deb)
        assert answer.status_code == 201, answer.text
        assert answer.json()["package"] == f"fine-{compression}"
