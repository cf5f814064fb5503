"""dpkg version order: python-debian's Version must agree with dpkg --compare-versions."""

from __future__ import annotations

import itertools
import subprocess

import pytest

from publisher.errors import InvalidPackage
from publisher.versions import check_version, sort_versions, version_key

TRICKY = [
    "1.0",
    "1.0-1",
    "1.0-2",
    "1.0~rc1-1",
    "1.0~~a-1",
    "1.0+b1-1",
    "1.0.1-1",
    "1:0.1-1",
    "2:0.0.1",
    "0.9",
    "1.0a",
    "1.0-1ubuntu1",
    "1.0-1+deb12u1",
    "1.0-1~bpo12+1",
    "10.0",
    "9.99",
    "1.2.3~dev4",
    "1.2.3",
    "1.2.3+post1",
    "0:1.0-1",
]


def dpkg_lt(a: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, "lt", b], check=False).returncode == 0


def test_order_matches_dpkg_on_tricky_versions() -> None:
    pairs = list(itertools.combinations(TRICKY, 2))
    script = "\n".join(
        f'if dpkg --compare-versions "{a}" lt "{b}"; then echo 1; else echo 0; fi' for a, b in pairs
    )
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    verdicts = out.split()
    assert len(verdicts) == len(pairs)
    for (a, b), verdict in zip(pairs, verdicts, strict=True):
        assert (version_key(a) < version_key(b)) == (verdict == "1"), (a, b)


def test_sort_versions_uses_dpkg_order() -> None:
    assert sort_versions(["1.0", "1.0~rc1", "1:0.1", "1.0+b1"]) == [
        "1.0~rc1",
        "1.0",
        "1.0+b1",
        "1:0.1",
    ]
    assert dpkg_lt("1.0~rc1", "1.0")


@pytest.mark.parametrize(
    "bad", ["", "a1.0", "1.0 1", "1:", "../1", "1.0-", "1.0_1", "1.0-1-", "x:1.0", "1:2:3"]
)
def test_invalid_versions_are_refused(bad: str) -> None:
    with pytest.raises(InvalidPackage):
        check_version(bad)


def test_version_key_orders_and_equates_like_python_debian() -> None:
    """The fast sort key against python-debian's dpkg-exact comparison, every pair of a
    deterministic spread of valid versions (tildes, zeros, empty runs, epochs)."""
    from debian.debian_support import Version

    parts = ["0", "00", "1", "1.0", "1.0~", "1.0~~", "1a", "1.a", "1+b1", "1~rc1", "9.9", "10"]
    revisions = ["", "0", "0~", "1", "1~a", "01", "a", "1.0", "0~x"]
    versions = [
        f"{e}{u}{'-' + r if r else ''}" for e in ("", "1:") for u in parts for r in revisions
    ]
    for v in versions:
        check_version(v)
    for a, b in itertools.combinations(versions, 2):
        va, vb = Version(a), Version(b)
        ka, kb = version_key(a), version_key(b)
        assert ((ka > kb) - (ka < kb)) == ((va > vb) - (va < vb)), (a, b)
