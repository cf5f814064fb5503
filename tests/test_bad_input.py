"""Bad input: each case is a clear error with the documented exit code, and the
repository tree is byte-for-byte unchanged afterwards."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from publisher.repo import Repository
from tests.clirun import run_main
from tests.conftest import CHANNELS, packages_text, snapshot
from tests.debs import craft_deb
from tests.tomlfile import write_toml

GOOD_CONTROL = (
    "Package: {package}\nVersion: {version}\nArchitecture: {arch}\n"
    "Maintainer: T <t@example.invalid>\nDescription: x\n y\n"
)


def control(package: str = "app", version: str = "1.0", arch: str = "amd64") -> str:
    return GOOD_CONTROL.format(package=package, version=version, arch=arch)


def write_config(repo: Repository, path: Path) -> Path:
    signing = repo.config.signing
    return write_toml(
        path,
        {
            "storage": {"type": "local", "path": str(repo.config.storage.path)},
            "signing": {"gnupghome": str(signing.gnupghome), "keys": list(signing.keys)},
            "channels": CHANNELS,
        },
    )


CASES: list[tuple[str, int, str]] = [
    ("text file", 3, "not a Debian package"),
    ("random bytes with ar magic", 3, "not a valid Debian binary package"),
    ("truncated", 3, "truncated"),
    ("missing Version", 3, "no Version field"),
    ("missing Package", 3, "no Package field"),
    ("traversal name", 3, "invalid package name"),
    ("uppercase name", 3, "invalid package name"),
    ("space in version", 3, "invalid version"),
    ("version without digit", 3, "invalid version"),
    ("unknown architecture", 3, "not carried by channel"),
    ("bad debian-binary", 3, "unsupported .deb format"),
    ("missing file", 3, "no such file"),
    ("directory", 3, "not a regular file"),
    ("different bytes, same version", 5, "different content"),
    ("unknown channel", 4, "unknown channel"),
    ("batch with one bad file", 3, "invalid package name"),
]


def make_case(name: str, tmp: Path, debs: Callable[..., Path]) -> tuple[list[str], str]:
    """Return (publish arguments after --channel CH, channel)."""
    p = tmp / "case.deb"
    if name == "text file":
        p.write_text("hello\n")
    elif name == "random bytes with ar magic":
        p.write_bytes(b"!<arch>\n" + b"\x00garbage" * 20)
    elif name == "truncated":
        good = debs("trunc", "1.0")
        p.write_bytes(good.read_bytes()[:-100])
    elif name == "missing Version":
        craft_deb(p, "Package: app\nArchitecture: amd64\nDescription: x\n")
    elif name == "missing Package":
        craft_deb(p, "Version: 1.0\nArchitecture: amd64\nDescription: x\n")
    elif name == "traversal name":
        craft_deb(p, control(package="../x"))
    elif name == "uppercase name":
        craft_deb(p, control(package="App"))
    elif name == "space in version":
        craft_deb(p, control(version="1.0 beta"))
    elif name == "version without digit":
        craft_deb(p, control(version="beta"))
    elif name == "unknown architecture":
        craft_deb(p, control(arch="riscv64"))
    elif name == "bad debian-binary":
        craft_deb(p, control(), debian_binary=b"3.0\n")
    elif name == "missing file":
        p = tmp / "does-not-exist.deb"
    elif name == "directory":
        p = tmp / "adir.deb"
        p.mkdir()
    elif name == "different bytes, same version":
        p = debs("app", "1.0-1", payload="rebuilt with different bytes\n")
    elif name == "unknown channel":
        p = debs("fresh", "1.0")
        return [str(p)], "nope"
    elif name == "batch with one bad file":
        good = debs("fine", "1.0")
        craft_deb(p, control(package="../evil"))
        return [str(good), str(p)], "dev"
    return [str(p)], "dev"


@pytest.mark.parametrize(("case", "exit_code", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_publish_is_refused_and_changes_nothing(
    case: str,
    exit_code: int,
    message: str,
    repo: Repository,
    debs: Callable[..., Path],
    tmp_path: Path,
) -> None:
    repo.publish("dev", [debs("app", "1.0-1"), debs("other", "2.0")])
    cfg = write_config(repo, tmp_path / "aptship.toml")
    cases = tmp_path / "cases"
    cases.mkdir()
    files, channel = make_case(case, cases, debs)
    before = snapshot(tmp_path / "repo")
    code, out, err = run_main("--config", str(cfg), "publish", "--channel", channel, *files)
    assert code == exit_code, (out, err)
    assert err.startswith("error: "), err
    assert message in err, err
    assert "Traceback" not in err
    assert snapshot(tmp_path / "repo") == before


def test_republishing_identical_bytes_is_a_noop(
    repo: Repository, debs: Callable[..., Path], tmp_path: Path
) -> None:
    deb = debs("app", "1.0-1")
    first = repo.publish("dev", [deb])
    assert first[0]["status"] == "added"
    before = snapshot(tmp_path / "repo")
    again = repo.publish("dev", [deb])
    assert again[0]["status"] == "unchanged"
    after = snapshot(tmp_path / "repo")
    # nothing but nothing changed in state or indexes
    assert {k for k in after if not k.startswith(".aptship/audit")} == {
        k for k in before if not k.startswith(".aptship/audit")
    }
    assert after == before


def test_repository_fields_in_control_are_not_trusted(repo: Repository, tmp_path: Path) -> None:
    deb = craft_deb(
        tmp_path / "sneaky.deb",
        control() + "Filename: ../../etc/passwd\nSHA256: 00\nSize: 1\n",
    )
    repo.publish("dev", [deb])
    packages = packages_text(repo.storage)
    assert "../../etc/passwd" not in packages
    assert "Filename: pool/main/a/app/app_1.0_amd64.deb" in packages
    assert "SHA256: 00\n" not in packages


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[storage]\ntype = "local"\npath = "r"\nbogus = 1\n', "unknown key storage.bogus"),
        ('[storage]\ntype = "ftp"\n', "storage.type must be"),
        ("not toml = = =", "invalid TOML"),
        (
            '[storage]\ntype = "local"\npath = "r"\n[signing]\nkeys = ["A"]\npassphrase = "x"\n'
            "[channels.dev]\n",
            "signing.passphrase is not allowed",
        ),
        (
            '[storage]\ntype = "local"\npath = "r"\n[signing]\nkeys = ["A"]\n'
            "[channels.dev]\nkeep = 0\n",
            "channels.dev.keep must be at least 1",
        ),
        (
            '[storage]\ntype = "local"\npath = "r"\n[signing]\nkeys = ["A"]\n'
            '[channels.prod]\npromote_from = ["staging"]\n',
            "unknown channel 'staging'",
        ),
    ],
)
def test_bad_config_names_key_and_file(text: str, message: str, tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    code, _out, err = run_main("--config", str(cfg), "list")
    assert code == 2
    assert message in err, err
    assert str(cfg) in err


def test_missing_config_is_a_config_error(tmp_path: Path) -> None:
    code, _out, err = run_main("--config", str(tmp_path / "none.toml"), "list")
    assert code == 2
    assert "not found" in err
