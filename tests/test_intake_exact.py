"""Intake reads a package's identity exactly as dpkg-deb does (limits.dpkg_check).

A differential test: a corpus of crafted .debs (duplicate and aliased ``control``
members, pax and GNU long-name headers, links, extra and duplicate ar members,
odd control text...) goes through ``inspect_deb`` in the default "auto" mode.  Each
one is either refused, or read with exactly the identity ``dpkg-deb --field``
prints; and the test records whether it took the in-process path or consulted
dpkg-deb, so that it proves every archive dpkg-deb would not build is cross-checked
and every canonical one, real ``dpkg-deb --build`` output among them, is not.
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from publisher import debfile
from publisher.config import LimitsConfig
from publisher.debfile import inspect_deb
from publisher.errors import ConfigError, ControlRejected, ControlTooLarge, InvalidPackage
from tests.debs import build_deb
from tests.security.crafted import HEAD, crafted_deb
from tests.security.crafted_archives import (
    add_file,
    add_special,
    control,
    deb,
    files_tar,
    tar_bytes,
    two_gzip_members,
)

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")

A, B = control("innocent"), control("evil")
FAST, DPKG, REFUSED = "fast", "dpkg", "refused"


def _pax_rename(tar: tarfile.TarFile) -> None:
    add_file(tar, "./decoy", A)
    add_file(tar, "./notcontrol", B, pax_headers={"path": "control"})


def _global_pax(tar: tarfile.TarFile) -> None:
    add_file(tar, "./control", A)


def _long_name(tar: tarfile.TarFile) -> None:
    add_file(tar, "./" + "x" * 120, b"x")
    add_file(tar, "./control", A)


def _hard_link(tar: tarfile.TarFile) -> None:
    add_file(tar, "./real", A)
    add_special(tar, "./control", tarfile.LNKTYPE, "./real")


def _symlink(tar: tarfile.TarFile) -> None:
    add_special(tar, "./control", tarfile.SYMTYPE, "/etc/hostname")


def _dir_control(tar: tarfile.TarFile) -> None:
    add_special(tar, "./control", tarfile.DIRTYPE)


def _file_then_dir(tar: tarfile.TarFile) -> None:
    add_file(tar, "./control", A)
    add_special(tar, "./control/", tarfile.DIRTYPE)


def _device(tar: tarfile.TarFile) -> None:
    add_file(tar, "./control", A)
    add_special(tar, "./null", tarfile.CHRTYPE)


def _in_subdir(tar: tarfile.TarFile) -> None:
    add_file(tar, "./control", A)
    add_file(tar, "./sub/control", B)


Case = Callable[[Path], Path]


def text(body: bytes) -> Case:
    return lambda p: crafted_deb(p, body)


def tar_case(build: Callable[[tarfile.TarFile], None], **kw: object) -> Case:
    return lambda p: deb(p, tar_bytes(build, **kw))


def files(*members: tuple[str, bytes], fmt: int = tarfile.GNU_FORMAT) -> Case:
    return lambda p: deb(p, files_tar(*members, fmt=fmt))


# Control fields dpkg validates, with values outside the plain forms inspect_deb reads
# in process.  dpkg-deb refuses the first ones; apt, had they been published, stops
# reading the whole index ("Problem parsing dependency") on every host.
REFUSED_BY_DPKG = {
    "unterminated relation version": b"Depends: foo (>= 1.0\n",
    "empty relation version": b"Depends: foo (>> )\n",
    "relation version with an empty revision": b"Depends: foo (>= 1.0-)\n",
    "relation epoch too big": b"Depends: foo (>= 99999999999:1.0)\n",
    "alternatives in Conflicts": b"Conflicts: foo | bar\n",
    "Essential: maybe": b"Essential: maybe\n",
    "Multi-Arch: sometimes": b"Multi-Arch: sometimes\n",
}
NOT_PLAIN = {
    **REFUSED_BY_DPKG,
    "obsolete relation operator": b"Depends: foo (> 1.0)\n",
    "Provides with >=": b"Provides: foo (>= 1.0)\n",
    "Conffiles in a binary control file": b"Conffiles:\n /etc/x 0123\n",
}


CASES: dict[str, tuple[Case, str]] = {
    # canonical archives, control text dpkg reads as aptship does: in process
    "crafted gz": (text(HEAD), FAST),
    "crafted xz": (lambda p: crafted_deb(p, HEAD, "xz"), FAST),
    "uncompressed control.tar": (
        lambda p: deb(p, files_tar(("./control", A)), compress=bytes, member="control.tar"),
        FAST,
    ),
    "ustar format": (files(("./", b""), ("./control", A), fmt=tarfile.USTAR_FORMAT), FAST),
    "names without ./": (files(("control", A), ("md5sums", b"")), FAST),
    "GNU ar names": (
        lambda p: deb(p, files_tar(("./control", A)), binary_name="debian-binary/"),
        FAST,
    ),
    "upper-case field names": (
        text(b"PACKAGE: innocent\nVERSION: 1.0-1\nARCHITECTURE: all\nMAINTAINER: x\n"),
        FAST,
    ),
    "mixed-case field names": (
        text(b"pACKAGE: innocent\nvERSION: 1.0-1\nArchitecture: all\n"),
        FAST,
    ),
    "no space after colons": (text(b"Package:innocent\nVersion:1.0-1\nArchitecture:all\n"), FAST),
    "trailing whitespace": (
        text(b"Package: innocent \t\nVersion: 1.0-1  \nArchitecture: all\t\n"),
        FAST,
    ),
    "tab continuation lines": (text(HEAD + b"Description: x\n\tmore\n \tand more\n"), FAST),
    "epoch": (text(HEAD.replace(b"1.0-1", b"2:1.0-1")), FAST),
    # the control text itself is refused, whatever the archive
    "upper-case package name": (text(HEAD.replace(b"innocent", b"Innocent")), REFUSED),
    "package twice, case apart": (text(HEAD + b"package: evil\n"), REFUSED),
    "CRLF lines": (text(HEAD.replace(b"\n", b"\r\n")), REFUSED),
    # canonical archive, but dpkg prints the version otherwise: dpkg-deb decides
    "epoch 0": (text(HEAD.replace(b"1.0-1", b"0:1.0-1")), DPKG),
    "epoch with a leading zero": (text(HEAD.replace(b"1.0-1", b"01:1.0-1")), DPKG),
    # fields dpkg validates, in plain forms: in process
    "plain relationships and flags": (
        text(
            HEAD + b"Depends: libc6 (>= 2.34), python3:any (>= 3.11~) | python3-minimal,\n"
            b" foo (= 1:2.0-1), bar (<<2)\nProvides: baz (= 1.0)\nConflicts: qux\n"
            b"Essential: no\nMulti-Arch: foreign\n"
        ),
        FAST,
    ),
    # a value dpkg may refuse (and apt then could not read the whole index): dpkg-deb
    **{name: (text(HEAD + body), DPKG) for name, body in NOT_PLAIN.items()},
    # archives dpkg-deb would not build: dpkg-deb decides
    "two control members": (files(("./control", A), ("./control", B)), DPKG),
    "two control members, reversed": (files(("./control", B), ("./control", A)), DPKG),
    "same content twice": (files(("./control", A), ("./control", A)), DPKG),
    "./control then control": (files(("./control", A), ("control", B)), DPKG),
    "control then ./control": (files(("control", A), ("./control", B)), DPKG),
    ".//control": (files(("./control", A), (".//control", B)), DPKG),
    "./././control": (files(("./control", A), ("./././control", B)), DPKG),
    "/control": (files(("./control", A), ("/control", B)), DPKG),
    "control in a subdirectory": (tar_case(_in_subdir), DPKG),
    "pax header renames a member to control": (
        tar_case(_pax_rename, fmt=tarfile.PAX_FORMAT),
        DPKG,
    ),
    "pax global header": (
        tar_case(_global_pax, fmt=tarfile.PAX_FORMAT, pax_headers={"comment": "x"}),
        DPKG,
    ),
    "GNU long-name member": (tar_case(_long_name), DPKG),
    "device node": (tar_case(_device), DPKG),
    "file then directory named control": (tar_case(_file_then_dir), DPKG),
    "_ignored ar member after data": (
        lambda p: deb(p, files_tar(("./control", A)), after=[("_ignored", b"x")]),
        DPKG,
    ),
    "two data members": (
        lambda p: deb(p, files_tar(("./control", A)), after=[("data.tar.gz", b"x")]),
        DPKG,
    ),
    "two control ar members": (
        lambda p: deb(
            p, files_tar(("./control", A)), after=[("control.tar.gz", files_tar(("control", B)))]
        ),
        DPKG,
    ),
    "debian-binary 2.1": (
        lambda p: deb(p, files_tar(("./control", A)), debian_binary=b"2.1\n"),
        DPKG,
    ),
    "gzip trailing garbage": (
        lambda p: deb(
            p,
            files_tar(("./control", A)),
            compress=lambda raw: gzip.compress(raw, mtime=0) + b"garbage",
        ),
        DPKG,
    ),
    "two gzip streams": (
        lambda p: deb(
            p, b"", compress=two_gzip_members(files_tar(("./control", A)), files_tar(("x", B)))
        ),
        DPKG,
    ),
    "two xz streams": (
        lambda p: deb(
            p,
            b"",
            member="control.tar.xz",
            compress=lambda _raw: lzma.compress(files_tar(("./control", A))) + lzma.compress(b""),
        ),
        DPKG,
    ),
    # refused before dpkg-deb is asked
    "hard link named control": (tar_case(_hard_link), REFUSED),
    "symlink named control": (tar_case(_symlink), REFUSED),
    "directory named control": (tar_case(_dir_control), REFUSED),
    "only ./././control": (files(("./././control", A)), REFUSED),
    "_ignored ar member before control": (
        lambda p: deb(p, files_tar(("./control", A)), before=[("_ignored", b"x")]),
        REFUSED,
    ),
    "upper-case ar member name": (
        lambda p: deb(p, files_tar(("./control", A)), member="CONTROL.TAR.GZ"),
        REFUSED,
    ),
    "trailing garbage after the ar archive": (
        lambda p: deb(p, files_tar(("./control", A)), trailing=b"garbage!" * 10),
        REFUSED,
    ),
}


def dpkg_field(path: Path) -> dict[str, str] | None:
    proc = subprocess.run(
        ["dpkg-deb", "--field", str(path), "Package", "Version", "Architecture"],
        capture_output=True,
        text=True,
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    if proc.returncode:
        return None
    return dict(line.split(": ", 1) for line in proc.stdout.splitlines())


def read(path: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, object]:
    """(FAST or DPKG: whether inspect_deb consulted dpkg-deb, the identity it read or
    the error it raised)."""
    calls: list[Path] = []
    real = debfile.dpkg_identity

    def counting(p: Path, label: str) -> dict[str, str]:
        calls.append(p)
        return real(p, label)

    monkeypatch.setattr(debfile, "dpkg_identity", counting)
    try:
        info = inspect_deb(path, LimitsConfig(dpkg_check=mode))
    except InvalidPackage as exc:
        return (DPKG if calls else FAST), exc
    identity = {"Package": info.package, "Version": info.version, "Architecture": info.architecture}
    return (DPKG if calls else FAST), identity


@pytest.mark.parametrize("case", list(CASES))
def test_auto_is_refused_or_exactly_what_dpkg_deb_reads(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make, expected = CASES[case]
    path = make(tmp_path / "case.deb")
    took, got = read(path, "auto", monkeypatch)
    refused = isinstance(got, InvalidPackage)
    if expected == REFUSED:
        assert refused, got
        return
    assert took == expected, (took, got)  # canonical: in process; anything else: dpkg-deb
    if expected == FAST:
        assert not refused, got
    if not refused:
        assert got == dpkg_field(path)
        assert read(path, "always", monkeypatch) == (DPKG, got)  # "always" agrees


def test_the_corpus_disagrees_where_it_should(tmp_path: Path) -> None:
    """The duplicates are real: dpkg-deb reads the last control member, not the first."""
    path = files(("./control", A), ("./control", B))(tmp_path / "dup.deb")
    assert dpkg_field(path) == {"Package": "evil", "Version": "1.0-1", "Architecture": "all"}
    path = files(("./control", A), ("./././control", B))(tmp_path / "alias.deb")
    assert (dpkg_field(path) or {}).get("Package") == "evil"


@pytest.mark.parametrize("compression", ["gzip", "xz", "zstd"])
def test_real_dpkg_deb_builds_take_the_fast_path(
    compression: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if compression == "zstd" and shutil.which("zstd") is None:
        pytest.skip("needs zstd")
    path = build_deb(tmp_path, "hello", "1:2.0~rc1-3", "amd64", compression=compression)
    took, got = read(path, "auto", monkeypatch)
    assert (took, got) == (FAST, dpkg_field(path))


def test_dpkg_check_modes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = crafted_deb(tmp_path / "ok.deb", HEAD)
    assert read(path, "never", monkeypatch)[0] == FAST
    assert read(path, "always", monkeypatch)[0] == DPKG
    assert [LimitsConfig(dpkg_check=v).dpkg_mode for v in (True, False, "auto")] == [
        "always",
        "never",
        "auto",
    ]
    with pytest.raises(ConfigError, match=r"limits\.dpkg_check must be one of"):
        LimitsConfig(dpkg_check="sometimes")


@pytest.mark.parametrize("compression", ["gzip", "xz", "zstd", "none"])
def test_every_control_codec_stops_at_the_limit(compression: str, tmp_path: Path) -> None:
    if compression == "zstd" and shutil.which("zstd") is None:
        pytest.skip("needs zstd")
    path = build_deb(tmp_path, "hello", "1.0", compression=compression)
    assert inspect_deb(path, LimitsConfig(max_control_bytes=10240)).package == "hello"
    with pytest.raises(ControlTooLarge, match=r"limits\.max_control_bytes"):
        inspect_deb(path, LimitsConfig(max_control_bytes=1000))


@pytest.mark.parametrize("case", list(REFUSED_BY_DPKG))
def test_fields_dpkg_refuses_are_refused(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = text(HEAD + REFUSED_BY_DPKG[case])(tmp_path / "case.deb")
    assert dpkg_field(path) is None  # dpkg-deb refuses it
    took, got = read(path, "auto", monkeypatch)
    assert took == DPKG and isinstance(got, ControlRejected), (took, got)
