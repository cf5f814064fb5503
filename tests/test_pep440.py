"""PEP 440 -> Debian version mapping: dpkg must order the mapped versions like PEP 440."""

from __future__ import annotations

import itertools
import subprocess

import pytest
from debian.debian_support import Version as DebVersion
from packaging.version import Version as PyVersion

from publisher.errors import UsageError
from publisher.pep440 import debian_upstream_version, debian_version
from publisher.versions import check_version

# (PEP 440, Debian upstream), ascending in PEP 440 order.
TABLE = [
    ("0.9.9", "0.9.9"),
    ("1.2.0.dev1", "1.2.0~~dev1"),
    ("1.2.0.dev3", "1.2.0~~dev3"),
    ("1.2.0.dev3+local.7", "1.2.0~~dev3+local.7"),
    ("1.2.0a1.dev1", "1.2.0~a1~dev1"),
    ("1.2.0a1", "1.2.0~a1"),
    ("1.2.0a1.post1.dev1", "1.2.0~a1+post1~dev1"),
    ("1.2.0a1.post1", "1.2.0~a1+post1"),
    ("1.2.0a2", "1.2.0~a2"),
    ("1.2.0a10", "1.2.0~a10"),
    ("1.2.0b2", "1.2.0~b2"),
    ("1.2.0rc1.dev1", "1.2.0~rc1~dev1"),
    ("1.2.0rc1", "1.2.0~rc1"),
    ("1.2.0rc1.post1", "1.2.0~rc1+post1"),
    ("1.2.0rc2", "1.2.0~rc2"),
    ("1.2.0", "1.2.0"),
    ("1.2.0+abc.1", "1.2.0+abc.1"),
    ("1.2.0+abc.2", "1.2.0+abc.2"),
    ("1.2.0+abc.10", "1.2.0+abc.10"),
    ("1.2.0.post1.dev2", "1.2.0+post1~dev2"),
    ("1.2.0.post1", "1.2.0+post1"),
    ("1.2.0.post1+abc", "1.2.0+post1+abc"),
    ("1.2.0.post2", "1.2.0+post2"),
    ("1.2.0.post10", "1.2.0+post10"),
    ("1.2.0.1", "1.2.0.1"),
    ("1.2.1.dev0", "1.2.1~~dev0"),
    ("1.2.1", "1.2.1"),
    ("1.2.10", "1.2.10"),
    ("1.10.0rc1", "1.10.0~rc1"),
    ("1.10.0", "1.10.0"),
    ("2.0.0rc1", "2.0.0~rc1"),
    ("2.0.0", "2.0.0"),
    ("10.0.0.dev1", "10.0.0~~dev1"),
    ("10.0.0", "10.0.0"),
    ("1!0.1.0.dev1", "1:0.1.0~~dev1"),
    ("1!0.1.0", "1:0.1.0"),
    ("1!0.1.0.post1", "1:0.1.0+post1"),
    ("2!0.0.1", "2:0.0.1"),
]
PAIRS = list(itertools.combinations(range(len(TABLE)), 2))


def test_table_is_in_pep440_order_and_big_enough() -> None:
    versions = [PyVersion(pep) for pep, _ in TABLE]
    assert len(TABLE) >= 20
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)


@pytest.mark.parametrize(("pep", "expected"), TABLE)
def test_mapping(pep: str, expected: str) -> None:
    assert debian_upstream_version(pep) == expected
    assert debian_version(pep) == f"{expected}-1"
    check_version(debian_version(pep))


@pytest.mark.parametrize(
    ("pep", "expected"),
    [
        ("1.2.0rc1", "1.2.0~rc1-1"),
        ("1.2.0a1", "1.2.0~a1-1"),
        ("1.2.0b2", "1.2.0~b2-1"),
        ("1.2.0.dev3", "1.2.0~~dev3-1"),
        ("1.2.0.post1", "1.2.0+post1-1"),
        ("1.2.0+abc.1", "1.2.0+abc.1-1"),
        ("1!2.0", "1:2.0-1"),
        # Spellings PEP 440 normalises.
        ("v1.2.0", "1.2.0-1"),
        ("1.2.0-rc.1", "1.2.0~rc1-1"),
        ("1.2.0c1", "1.2.0~rc1-1"),
        ("1.2.0alpha1", "1.2.0~a1-1"),
        ("1.2.0-1", "1.2.0+post1-1"),
        ("1.2.0.dev", "1.2.0~~dev0-1"),
        ("1.2.0+ABC_1", "1.2.0+abc.1-1"),
        ("01.02.000", "1.2.0-1"),
    ],
)
def test_examples_and_normalised_spellings(pep: str, expected: str) -> None:
    assert debian_version(pep) == expected


def test_revision_override() -> None:
    assert debian_version("1.2.0rc1", revision="3") == "1.2.0~rc1-3"
    assert debian_version("1.2.0", revision="1~bpo12+1") == "1.2.0-1~bpo12+1"


@pytest.mark.parametrize("revision", ["", "1-2", "a b", "~1", "1:2"])
def test_bad_revision_is_a_usage_error(revision: str) -> None:
    with pytest.raises(UsageError, match="revision"):
        debian_version("1.0", revision=revision)


@pytest.mark.parametrize("bad", ["", "latest", "1.2.x", "1.0-beta-final", "1..2"])
def test_not_pep440_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError, match="not a PEP 440 version"):
        debian_version(bad)


def test_python_debian_orders_every_pair_like_pep440() -> None:
    for i, j in PAIRS:
        (pa, da), (pb, db) = TABLE[i], TABLE[j]
        assert (PyVersion(pa) < PyVersion(pb)) == (
            DebVersion(debian_version(pa)) < DebVersion(debian_version(pb))
        ), (pa, pb, da, db)


def test_dpkg_orders_every_pair_like_pep440() -> None:
    """Every pair through the real ``dpkg --compare-versions``, in one shell run."""
    mapped = [debian_version(pep) for pep, _ in TABLE]
    script = "\n".join(
        f"dpkg --compare-versions '{mapped[i]}' lt '{mapped[j]}' && echo 1 || echo 0"
        for i, j in PAIRS
    )
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    verdicts = out.split()
    assert len(verdicts) == len(PAIRS)
    for (i, j), verdict in zip(PAIRS, verdicts, strict=True):
        pep_lt = PyVersion(TABLE[i][0]) < PyVersion(TABLE[j][0])
        assert pep_lt == (verdict == "1"), (TABLE[i][0], TABLE[j][0], mapped[i], mapped[j])


@pytest.mark.parametrize("label", ["zzz", "5", "post1", "g1234abc.d20240101", "ubuntu.1"])
def test_any_local_label_sorts_between_its_release_and_the_next(label: str) -> None:
    """The documented guarantee for local labels (see publisher.pep440)."""
    before, local, after = (
        DebVersion(debian_version(v)) for v in ("1.2.0", f"1.2.0+{label}", "1.2.0.1")
    )
    assert before < local < after
    assert DebVersion(debian_version(f"1.2.0rc1+{label}")) < DebVersion(debian_version("1.2.0"))
