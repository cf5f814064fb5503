"""Signing keys whose signatures come from a subkey (real gpg, real gpgv).

Users copy the primary fingerprint into ``[signing] keys``; gpg then signs with the
key's newest valid signing subkey.  Publishing and ``aptship verify`` accept that
signature as the configured key's, including when an expired signing subkey sits
next to the valid one.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from publisher.errors import SigningError
from publisher.signing import Signer, gpgv_verify, signer_fingerprints
from publisher.verify import verify
from tests.conftest import RepoFactory


@dataclass(frozen=True)
class SubkeyedKey:
    home: Path
    primary: str
    signing: str  # the valid signing subkey
    expired: str | None  # an expired signing subkey, newer than the valid one


def gpg(home: Path, *args: str, faked_time: str | None = None) -> str:
    argv = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback"]
    if faked_time:
        argv += ["--faked-system-time", faked_time]
    result = subprocess.run(
        [*argv, "--passphrase", "", *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def subkey_fingerprints(home: Path, primary: str) -> list[tuple[str, str, str]]:
    """(fingerprint, capabilities, validity) of each subkey, in creation order."""
    listing = gpg(home, "--with-colons", "--list-keys", primary)
    subs: list[tuple[str, str, str]] = []
    current: tuple[str, str] | None = None
    for line in listing.splitlines():
        fields = line.split(":")
        if fields[0] == "sub":
            current = (fields[11], fields[1])
        elif fields[0] == "fpr" and current is not None:
            subs.append((fields[9], current[0], current[1]))
            current = None
    return subs


def make_key(home: Path, *, with_expired: bool) -> SubkeyedKey:
    """A certify-only primary key with an ed25519 signing subkey (made "in 2019"), and
    optionally a second signing subkey made in 2020 that expired a day later."""
    home.mkdir(mode=0o700)
    gpg(
        home,
        "--quick-gen-key",
        "Subkey Test <subkey@aptship.invalid>",
        "ed25519",
        "cert",
        "never",
        faked_time="20190101T000000",
    )
    primary = gpg(home, "--with-colons", "--list-keys").split("fpr:::::::::")[1].split(":")[0]
    gpg(home, "--quick-add-key", primary, "ed25519", "sign", "never", faked_time="20190102T000000")
    if with_expired:
        gpg(home, "--quick-add-key", primary, "ed25519", "sign", "1d", faked_time="20200101T000000")
    subs = subkey_fingerprints(home, primary)
    valid = [fpr for fpr, caps, validity in subs if "s" in caps and validity != "e"]
    expired = [fpr for fpr, caps, validity in subs if "s" in caps and validity == "e"]
    assert len(valid) == 1 and len(expired) == (1 if with_expired else 0), subs
    return SubkeyedKey(home, primary, valid[0], expired[0] if expired else None)


@pytest.fixture(scope="module")
def subkeyed(tmp_path_factory: pytest.TempPathFactory) -> SubkeyedKey:
    return make_key(tmp_path_factory.mktemp("subkey") / "gnupg", with_expired=False)


@pytest.fixture(scope="module")
def with_expired(tmp_path_factory: pytest.TempPathFactory) -> SubkeyedKey:
    return make_key(tmp_path_factory.mktemp("expired") / "gnupg", with_expired=True)


def publish_and_verify(
    make_repo: RepoFactory, debs: Callable[..., Path], key: SubkeyedKey, configured: str
) -> None:
    repo = make_repo(keys=[configured], gnupghome=key.home)
    repo.publish("dev", [debs("app", "1.0-1")])
    assert verify(repo) == []
    inrelease = repo.storage.read_bytes("dists/dev/InRelease")
    keyring = repo.storage.read_bytes("archive-keyring.asc")
    ok, out = gpgv_verify(keyring, inrelease)
    assert ok, out
    # the signature really is the subkey's, and carries the primary's fingerprint
    assert signer_fingerprints(keyring, inrelease) == [(key.signing, key.primary)]


@pytest.mark.parametrize("form", ["primary", "primary-0x", "long-id", "subkey"])
def test_primary_fingerprint_of_a_key_with_a_signing_subkey(
    make_repo: RepoFactory, debs: Callable[..., Path], subkeyed: SubkeyedKey, form: str
) -> None:
    configured = {
        "primary": subkeyed.primary,
        "primary-0x": "0x" + subkeyed.primary.lower(),
        "long-id": subkeyed.primary[-16:],
        "subkey": subkeyed.signing,
    }[form]
    publish_and_verify(make_repo, debs, subkeyed, configured)


def test_an_expired_subkey_next_to_a_valid_one(
    make_repo: RepoFactory, debs: Callable[..., Path], with_expired: SubkeyedKey
) -> None:
    publish_and_verify(make_repo, debs, with_expired, with_expired.primary)


def test_an_expired_subkey_alone_is_refused(with_expired: SubkeyedKey) -> None:
    """Naming the expired subkey itself (with `!`, so gpg may not pick another)."""
    from publisher.config import SigningConfig

    assert with_expired.expired is not None
    signer = Signer(SigningConfig(gnupghome=with_expired.home, keys=(with_expired.expired + "!",)))
    with pytest.raises(SigningError):
        signer.sign_release(b"Origin: test\n")


def test_another_keys_signature_is_not_accepted(
    subkeyed: SubkeyedKey, with_expired: SubkeyedKey, tmp_path: Path
) -> None:
    """A good signature by another key's subkey does not count for the configured key."""
    from publisher.config import SigningConfig

    signed = Signer(SigningConfig(gnupghome=subkeyed.home, keys=(subkeyed.primary,)))
    inrelease = signed.sign_release(b"Origin: test\n").inrelease
    both = tmp_path / "both"
    shutil.copytree(with_expired.home, both, ignore=shutil.ignore_patterns("S.*"))
    public = subprocess.run(
        ["gpg", "--homedir", str(subkeyed.home), "--export", subkeyed.primary],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(
        ["gpg", "--homedir", str(both), "--batch", "--import"],
        input=public,
        capture_output=True,
        check=True,
    )
    other = Signer(SigningConfig(gnupghome=both, keys=(with_expired.primary,)))
    result = other.gpg.verify(inrelease)
    assert result.valid  # a good signature, just not by the configured key
    with pytest.raises(SigningError, match=f"no valid signature by key {with_expired.primary}"):
        other.check_signed_by(result, "InRelease")


def test_verify_reports_a_signature_by_a_key_that_is_not_configured(
    make_repo: RepoFactory,
    debs: Callable[..., Path],
    subkeyed: SubkeyedKey,
    gpg_key: tuple[Path, str],
) -> None:
    """The published keyring verifies, but the configured key changed since: verify says so."""
    repo = make_repo(keys=[subkeyed.primary], gnupghome=subkeyed.home)
    repo.publish("dev", [debs("app", "1.0-1")])
    signature = repo.storage.read_bytes("dists/dev/InRelease")
    keyring = repo.storage.read_bytes("archive-keyring.asc")
    later = make_repo(keys=[gpg_key[1]], gnupghome=gpg_key[0])
    assert later.storage.read_bytes("dists/dev/InRelease") == signature
    assert later.storage.read_bytes("archive-keyring.asc") == keyring
    problems = verify(later, channels=["dev"])
    assert problems == [f"dists/dev/InRelease: no valid signature by configured key {gpg_key[1]}"]
