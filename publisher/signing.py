"""Sign Release files with GnuPG through python-gnupg, and check the result.

``InRelease`` (clearsigned) and ``Release.gpg`` (detached, armored) carry one
signature from every configured key, so keys can be rotated by listing the new key
beside the old one until every host trusts it.  Nothing unsigned or wrongly signed is
ever returned.

One gpg process signs, one verifies (docs/operations.md, "Signing"): a text-mode
detached signature (class 0x01) of a Release whose lines carry no trailing blanks
and no CR signs exactly the text a cleartext signature of it signs (RFC 4880,
section 7.1: the line ending before the armor header is not part of the text, so
the clearsigned body ends with one empty line).  So the same signature is
``Release.gpg`` and, wrapped in the cleartext framework, ``InRelease``.  The
assembled ``InRelease`` is then verified once, which checks the signature, the
``Hash:`` header and the dash-escaping together.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from publisher.errors import SigningError

if TYPE_CHECKING:
    from publisher.config import SigningConfig


# The files of a GnuPG home that hold public keys or say where they are (GnuPG 2.1+
# keybox, the older keyring, 2.4's keyboxd database and its write-ahead log, options)
KEYRING_FILES = (
    "pubring.kbx",
    "pubring.gpg",
    "public-keys.d/pubring.db",
    "public-keys.d/pubring.db-wal",
    "gpg.conf",
    "common.conf",
)


@dataclass(frozen=True)
class Signatures:
    inrelease: bytes
    release_gpg: bytes


def _gpg(home: Path | None) -> Any:
    if home is not None and not home.is_dir():
        raise SigningError(f"GnuPG home {home} does not exist")
    try:
        return _lazy_gpg_class()(gnupghome=str(home) if home else None)
    except (OSError, ValueError, RuntimeError) as exc:
        raise SigningError(f"cannot run gpg: {exc}") from exc


_PROBE = ["--list-config", "--with-colons"]


@contextlib.contextmanager
def _running_gpg() -> Iterator[None]:
    """gpg is started on first use (not when the GPG object is made): a missing or
    broken gpg binary is a SigningError there."""
    try:
        yield
    except OSError as exc:
        raise SigningError(f"cannot run gpg: {exc}") from exc


class _NoProcess:
    """Stands in for the ``gpg --list-config`` process python-gnupg starts in
    ``GPG.__init__`` (no output, exit 0)."""

    def __init__(self) -> None:
        self.stdin, self.stdout, self.stderr = io.BytesIO(), io.BytesIO(), io.BytesIO()
        self.returncode = 0
        self.pid = 0

    def wait(self) -> int:
        return 0


@functools.cache
def _lazy_gpg_class() -> Any:
    import gnupg

    class LazyGPG(gnupg.GPG):  # type: ignore[misc]
        """python-gnupg's GPG without the ``gpg --list-config`` process at start-up:
        the version is probed when python-gnupg first needs it (passphrases, key
        generation), so a publish starts gpg only to sign and to verify."""

        def __init__(self, **kw: Any) -> None:
            self._skip_probe = True
            try:
                super().__init__(**kw)
            finally:
                self._skip_probe = False

        def _open_subprocess(self, args: list[str], passphrase: bool = False) -> Any:
            if getattr(self, "_skip_probe", False) and args == _PROBE:
                return _NoProcess()
            return super()._open_subprocess(args, passphrase)

        @property
        def version(self) -> Any:
            if "_version" not in self.__dict__:
                self.__dict__["_version"] = _probe_version(self)
            return self.__dict__["_version"]

        @version.setter
        def version(self, value: Any) -> None:
            if not self._skip_probe:
                self.__dict__["_version"] = value

    return LazyGPG


def _probe_version(gpg: Any) -> Any:
    """The version python-gnupg's ``GPG.__init__`` would have probed."""
    import gnupg

    proc = gpg._open_subprocess(_PROBE)
    result = gpg.result_map["verify"](gpg)
    gpg._collect_output(proc, result, stdin=proc.stdin)
    if proc.returncode != 0:
        raise SigningError(f"cannot run gpg: {result.stderr}")
    m = gnupg.VERSION_RE.search(result.data)
    return tuple(int(s) for s in m.groups()[0].split(b".")) if m else None


# OpenPGP hash algorithm ids (RFC 4880, 9.4) -> the name a cleartext "Hash:" header uses
HASH_NAMES = {"2": "SHA1", "8": "SHA256", "9": "SHA384", "10": "SHA512", "11": "SHA224"}


def cleartext_safe(text: bytes) -> bool:
    """Whether a text-mode signature of ``text`` also verifies as its cleartext
    signature: UTF-8, ends with a newline, no CR, no line with trailing blanks (the
    cleartext form strips them, a text-mode signature does not)."""
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if not text.endswith(b"\n") or b"\r" in text:
        return False
    return not any(line.endswith((b" ", b"\t")) for line in text.split(b"\n"))


def clearsigned(text: bytes, signature: bytes, hash_name: str) -> bytes:
    """``text`` in the cleartext signature framework (RFC 4880, 7) with ``signature``,
    a text-mode signature of it.  Lines starting with ``-`` are dash-escaped; the
    empty line before the armor keeps ``text``'s final newline in the signed text."""
    lines = text.split(b"\n")[:-1]
    body = b"".join((b"- " + ln if ln.startswith(b"-") else ln) + b"\n" for ln in lines)
    header = b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: " + hash_name.encode() + b"\n\n"
    return header + body + b"\n" + signature


def key_matches(configured: str, *seen: str | None) -> bool:
    """Whether a configured key (fingerprint or key id, ``0x`` and a trailing ``!``
    allowed) names one of ``seen``: the signing (sub)key's fingerprint or id, or the
    fingerprint of its primary key.  A signature made by a signing subkey counts
    for the primary fingerprint users copy into ``[signing] keys``."""
    want = configured.upper().removeprefix("0X").removesuffix("!")
    return bool(want) and any(v and v.upper().endswith(want) for v in seen)


class Signer:
    def __init__(self, cfg: SigningConfig) -> None:
        self.cfg = cfg
        self._gpg_obj: Any = None
        self._public: bytes | None = None

    @property
    def gpg(self) -> Any:
        if self._gpg_obj is None:
            self._gpg_obj = _gpg(self.cfg.gnupghome)
        return self._gpg_obj

    def _sign(self, data: bytes, *, clearsign: bool, textmode: bool = False) -> Any:
        extra: list[str] = ["--digest-algo", "SHA512"]
        if textmode:
            extra.append("--textmode")
        for key in self.cfg.keys:
            extra += ["--local-user", key]
        with _running_gpg():
            result = self.gpg.sign(
                data,
                keyid=None,
                clearsign=clearsign,
                detach=not clearsign,
                binary=False,
                passphrase=self.cfg.passphrase(),
                extra_args=extra,
            )
        if not result.data:
            status = getattr(result, "status", None) or "no output"
            raise SigningError(
                f"gpg could not sign with key(s) {', '.join(self.cfg.keys)}: {status}"
            )
        return result

    def check_signed_by(self, result: Any, what: str) -> None:
        """Every configured key made a valid signature in a python-gnupg verify result
        (directly or through one of its signing subkeys)."""
        infos = list(getattr(result, "sig_info", {}).values())
        good = [i for i in infos if i.get("status") == "signature valid"] or (
            [
                {
                    "fingerprint": result.fingerprint,
                    "keyid": result.key_id,
                    "pubkey_fingerprint": getattr(result, "pubkey_fingerprint", None),
                }
            ]
            if result.valid
            else []
        )
        for key in self.cfg.keys:
            if not any(
                key_matches(key, i.get("fingerprint"), i.get("keyid"), i.get("pubkey_fingerprint"))
                for i in good
            ):
                raise SigningError(f"{what}: no valid signature by key {key} after signing")

    def sign_release(self, release: bytes) -> Signatures:
        """Sign ``release`` once (text mode, detached) and verify it once, as InRelease."""
        if not cleartext_safe(release):
            return self._sign_twice(release)
        result = self._sign(release, clearsign=False, textmode=True)
        detached = bytes(result.data)
        hash_name = HASH_NAMES.get(str(getattr(result, "hash_algo", "")))
        if hash_name is None:
            raise SigningError(f"gpg signed with an unexpected hash algorithm ({result.hash_algo})")
        inrelease = clearsigned(release, detached, hash_name)
        with _running_gpg():
            self.check_signed_by(self.gpg.verify(inrelease), "InRelease")
        return Signatures(inrelease=inrelease, release_gpg=detached)

    def _sign_twice(self, release: bytes) -> Signatures:
        """A Release the one-signature form cannot carry: gpg clearsigns it itself."""
        inrelease = bytes(self._sign(release, clearsign=True).data)
        self.check_signed_by(self.gpg.verify(inrelease), "InRelease")
        detached = bytes(self._sign(release, clearsign=False).data)
        with tempfile.NamedTemporaryFile(suffix=".gpg") as sig:
            sig.write(detached)
            sig.flush()
            self.check_signed_by(self.gpg.verify_data(sig.name, release), "Release.gpg")
        return Signatures(inrelease=inrelease, release_gpg=detached)

    def keyring_stamp(self) -> str:
        """A digest of what :meth:`export_public` depends on, read without starting
        gpg: the configured keys, the GnuPG home, and the content of its keyring and
        option files.  Empty when it cannot be read (then the key is exported)."""
        home = self.cfg.gnupghome or Path(os.environ.get("GNUPGHOME") or Path.home() / ".gnupg")
        stamp = hashlib.sha256(json.dumps([list(self.cfg.keys), str(home)]).encode())
        for name in KEYRING_FILES:
            try:
                with open(home / name, "rb") as fh:
                    digest = hashlib.file_digest(fh, "sha256").hexdigest()
            except FileNotFoundError:
                digest = "-"
            except OSError:
                return ""
            stamp.update(f"{name} {digest}\n".encode())
        return stamp.hexdigest()

    def export_public(self) -> bytes:
        """The configured keys' public parts, armored (exported once per Signer).

        Every render publishes or checks the keyring; a long-lived server would
        otherwise start gpg for it on each publish.  The configured keys do not change
        for the life of a Signer (a config change makes a new Repository).
        """
        if self._public is None:
            with _running_gpg():
                armored = self.gpg.export_keys(list(self.cfg.keys))
            if not armored or "BEGIN PGP PUBLIC KEY BLOCK" not in armored:
                raise SigningError(f"cannot export public key(s) {', '.join(self.cfg.keys)}")
            self._public = str(armored).encode("ascii")
        return self._public


def generate_dev_key(home: Path, name: str, email: str) -> str:
    """Create an ed25519 signing key without passphrase in ``home``; return its fingerprint."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    gpg = _gpg(home)
    with _running_gpg():
        return _generate(gpg, home, name, email)


def _generate(gpg: Any, home: Path, name: str, email: str) -> str:
    params = gpg.gen_key_input(
        key_type="EDDSA",
        key_curve="ed25519",
        key_usage="sign",
        name_real=name,
        name_email=email,
        expire_date=0,
        no_protection=True,
    )
    key = gpg.gen_key(params)
    if not key.fingerprint:
        raise SigningError(f"gpg could not generate a key in {home}: {key.status or key.stderr}")
    return str(key.fingerprint)


@dataclass(frozen=True)
class GpgvResult:
    ok: bool
    output: str  # gpgv's messages (stderr)
    signers: list[tuple[str, str]]  # (signing key fingerprint, its primary's) per good signature


class Gpgv:
    """``gpgv`` against one armored public key, dearmored once for several checks."""

    def __init__(self, keyring_asc: bytes) -> None:
        if shutil.which("gpgv") is None:
            raise SigningError("gpgv is not installed (Debian package gpgv)")
        self._tmp = tempfile.TemporaryDirectory(prefix="aptship-gpgv-")
        self.dir = Path(self._tmp.name)
        self._calls = itertools.count()
        (self.dir / "key.asc").write_bytes(keyring_asc)
        self.keyring = self.dir / "keyring.gpg"
        dearmor = subprocess.run(
            [
                "gpg",
                "--batch",
                "--yes",
                "--dearmor",
                "-o",
                str(self.keyring),
                str(self.dir / "key.asc"),
            ],
            capture_output=True,
            check=False,
        )
        self.error = "" if dearmor.returncode == 0 else dearmor.stderr.decode(errors="replace")

    def __enter__(self) -> Gpgv:
        return self

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()

    def check(self, signed: bytes, data: bytes | None = None) -> GpgvResult:
        """One gpgv run; several may run at once (each has its own files)."""
        if self.error:
            return GpgvResult(False, self.error, [])
        n = next(self._calls)
        sig = self.dir / f"sig-{n}"
        sig.write_bytes(signed)
        args = ["gpgv", "--status-fd", "1", "--keyring", str(self.keyring), str(sig)]
        if data is not None:
            (self.dir / f"data-{n}").write_bytes(data)
            args.append(str(self.dir / f"data-{n}"))
        proc = subprocess.run(args, capture_output=True, check=False)
        signers = []
        for line in proc.stdout.decode(errors="replace").splitlines():
            fields = line.split()
            if fields[:2] == ["[GNUPG:]", "VALIDSIG"] and len(fields) >= 12:
                signers.append((fields[2], fields[11]))
        return GpgvResult(proc.returncode == 0, proc.stderr.decode(errors="replace"), signers)


def gpgv_check(keyring_asc: bytes, signed: bytes, data: bytes | None = None) -> GpgvResult:
    """Check a signature with ``gpgv`` against an armored public key, as apt does.

    ``signed`` is an InRelease (``data`` None) or a detached signature of ``data``.
    ``signers`` comes from gpgv's ``VALIDSIG`` status lines.
    """
    with Gpgv(keyring_asc) as gpgv:
        return gpgv.check(signed, data)


def gpgv_verify(keyring_asc: bytes, signed: bytes, data: bytes | None = None) -> tuple[bool, str]:
    """(ok, gpgv output) of :func:`gpgv_check`."""
    result = gpgv_check(keyring_asc, signed, data)
    return result.ok, result.output


def signer_fingerprints(
    keyring_asc: bytes, signed: bytes, data: bytes | None = None
) -> list[tuple[str, str]]:
    """(signing key, primary key) fingerprints of the good signatures on ``signed``."""
    return gpgv_check(keyring_asc, signed, data).signers
