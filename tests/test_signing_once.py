"""One signature serves Release.gpg and InRelease (docs/operations.md, "Signing").

gpgv (as apt runs it) must accept both, the InRelease must carry exactly the Release
text, a real apt-get must accept either file, and one publish starts one signing
and one verifying gpg.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from publisher.config import SigningConfig
from publisher.errors import SigningError
from publisher.repo import KEYRING_KEY, Repository
from publisher.signing import Signer, cleartext_safe, generate_dev_key, gpgv_verify
from tests.aptenv import AptEnv
from tests.httpserve import serve_directory

RELEASE = (
    b"Origin: test\nSuite: dev\nDescription: a line\n"
    b"-starts with a dash\n--- three dashes\n"
    b"SHA256:\n 0123 12 main/binary-amd64/Packages\n"
)


def signed_text(key: bytes, inrelease: bytes, tmp_path: Path) -> bytes:
    """The text gpgv says InRelease signs (what apt reads from it)."""
    subprocess.run(
        ["gpg", "--batch", "--yes", "--dearmor", "-o", str(tmp_path / "k.gpg")],
        input=key,
        check=True,
        capture_output=True,
    )
    (tmp_path / "InRelease").write_bytes(inrelease)
    out = subprocess.run(
        ["gpgv", "--keyring", str(tmp_path / "k.gpg"), "-o", "-", str(tmp_path / "InRelease")],
        capture_output=True,
        check=True,
    )
    return out.stdout


@pytest.fixture
def signer(gpg_key: tuple[Path, str]) -> Signer:
    return Signer(SigningConfig(gnupghome=gpg_key[0], keys=(gpg_key[1],)))


def count_calls(monkeypatch: pytest.MonkeyPatch, signer: Signer) -> dict[str, int]:
    calls = {"sign": 0, "verify": 0, "verify_data": 0}
    gpg = signer.gpg
    for name in calls:
        real = getattr(gpg, name)

        def wrapped(*a: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            calls[_name] += 1
            return _real(*a, **kw)

        monkeypatch.setattr(gpg, name, wrapped)
    return calls


def test_one_signature_serves_both_files(
    signer: Signer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_calls(monkeypatch, signer)
    sigs = signer.sign_release(RELEASE)
    assert calls == {"sign": 1, "verify": 1, "verify_data": 0}
    key = signer.export_public()
    ok, out = gpgv_verify(key, sigs.inrelease)
    assert ok, out
    ok, out = gpgv_verify(key, sigs.release_gpg, RELEASE)
    assert ok, out
    # gpgv prints each cleartext line with a newline, the final empty one included;
    # the bytes signed are RELEASE itself (the same signature verifies over it above)
    assert signed_text(key, sigs.inrelease, tmp_path) == RELEASE + b"\n"
    assert (
        sigs.inrelease.split(b"-----BEGIN PGP SIGNATURE-----")[1]
        == sigs.release_gpg.split(b"-----BEGIN PGP SIGNATURE-----")[1]
    )
    assert b"\n- -starts with a dash\n- --- three dashes\n" in sigs.inrelease
    ok, _ = gpgv_verify(key, sigs.release_gpg, RELEASE.replace(b"dev", b"xxx"))
    assert not ok
    tampered = sigs.inrelease.replace(b"Suite: dev", b"Suite: xxx")
    ok, _ = gpgv_verify(key, tampered)
    assert not ok


@pytest.mark.parametrize(
    "text", [b"Origin: test \nSuite: dev\n", b"Origin: test\r\n", b"Origin: test", b"\xff\n"]
)
def test_texts_the_cleartext_form_would_change_are_signed_twice(
    signer: Signer, text: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trailing blanks, CR, no final newline, not UTF-8: gpg clearsigns itself."""
    assert not cleartext_safe(text)
    calls = count_calls(monkeypatch, signer)
    sigs = signer.sign_release(text)
    assert calls["sign"] == 2
    key = signer.export_public()
    assert gpgv_verify(key, sigs.inrelease)[0]
    assert gpgv_verify(key, sigs.release_gpg, text)[0]


def test_publish_signs_once(
    repo: Repository, debs: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.publish("dev", [debs("app", "1.0-1")])
    calls = count_calls(monkeypatch, repo.signer)
    repo.publish("dev", [debs("app", "2.0-1")])
    assert calls == {"sign": 1, "verify": 1, "verify_data": 0}


@pytest.mark.e2e
@pytest.mark.parametrize("signed_file", ["InRelease", "Release.gpg"])
def test_apt_accepts_either_signed_file(
    repo: Repository, debs: Callable[..., Path], tmp_path: Path, signed_file: str
) -> None:
    """apt reads InRelease; without it, Release + Release.gpg (the same signature)."""
    deb = debs("app", "1.0-1")
    repo.publish("dev", [deb])
    root = tmp_path / "repo"
    if signed_file == "Release.gpg":
        (root / "dists/dev/InRelease").unlink()
    apt = AptEnv(tmp_path / "apt")
    with serve_directory(root) as (url, requests):
        apt.add_source(url, "dev", root / KEYRING_KEY)
        result = apt.update()
        assert result.returncode == 0, result.output
        assert "W:" not in result.output and "E:" not in result.output, result.output
        assert any(r.endswith(f"/dists/dev/{signed_file}") for r in requests), requests
        assert apt.fetch("app=1.0-1") == deb.read_bytes()


def test_publish_exports_the_public_key_only_when_the_keyring_changes(
    make_repo: Callable[..., Repository],
    debs: Callable[..., Path],
    gpg_key: tuple[Path, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each publish runs in a new process (a new Signer): the record's keyring stamp
    saves the `gpg --export`, and any change to the home's keys brings it back."""
    import gnupg

    home = tmp_path / "gnupg"
    shutil.copytree(gpg_key[0], home, ignore=shutil.ignore_patterns("S.*", "*.lock"))
    exports: list[object] = []
    real = gnupg.GPG.export_keys

    def export_keys(self: Any, *a: Any, **kw: Any) -> Any:
        exports.append(a)
        return real(self, *a, **kw)

    monkeypatch.setattr(gnupg.GPG, "export_keys", export_keys)
    try:
        make_repo(gnupghome=home).publish("dev", [debs("app", "1.0-1")])
        assert len(exports) == 1  # the channel's first render
        make_repo(gnupghome=home).publish("dev", [debs("app", "1.1-1")])
        assert len(exports) == 1
        make_repo(gnupghome=home).reindex(["dev"])  # a full render: the key is intact
        assert len(exports) == 1
        published = tmp_path / "repo" / KEYRING_KEY
        key = published.read_bytes()
        published.write_bytes(key.replace(b"\n", b"\n\n", 3))  # damaged
        make_repo(gnupghome=home).reindex(["dev"])
        assert len(exports) == 2 and published.read_bytes() == key  # repaired
        published.unlink()
        make_repo(gnupghome=home).reindex(["dev"])
        assert len(exports) == 3 and published.read_bytes() == key
        make_repo(gnupghome=home).reindex(["dev"], full=True)  # always exported
        assert len(exports) == 4
        generate_dev_key(home, "aptship second key", "second@aptship.invalid")
        second = make_repo(gnupghome=home)
        second.publish("dev", [debs("app", "1.2-1")])
        assert len(exports) == 5
        assert (tmp_path / "repo" / KEYRING_KEY).read_bytes() == second.signer.export_public()
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


def test_a_missing_gpg_is_a_signing_error(
    gpg_key: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gpg starts on first use now (no probe when the GPG object is made): a missing
    binary must still surface as SigningError, not OSError."""
    signer = Signer(SigningConfig(gnupghome=gpg_key[0], keys=(gpg_key[1],)))
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no gpg on PATH
    with pytest.raises(SigningError, match="cannot run gpg"):
        signer.sign_release(RELEASE)
    with pytest.raises(SigningError, match="cannot run gpg"):
        signer.export_public()
