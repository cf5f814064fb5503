"""``aptship verify``: check a repository the way apt and an auditor would.

For every channel: the InRelease and Release.gpg signatures (gpgv against the
published ``archive-keyring.asc``), every index's size and hashes against Release
and every by-hash copy, that the published record shows the newest committed state,
and that every entry's pool file exists with the right size and SHA256 (``fast``:
size only).  ``fast`` also hashes each index once (its by-hash copy, which apt
fetches) and skips the uncompressed ``Packages`` that Release only lists.  Returns a
list of problems; empty means healthy.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from publisher.dists import dists_key, read_record, served
from publisher.errors import NotFound, StorageError
from publisher.signing import Gpgv, key_matches
from publisher.state import shard_key

if TYPE_CHECKING:
    from publisher.repo import Repository

CHUNK = 1024 * 1024


def _digest(repo: Repository, key: str, name: str) -> str:
    h = hashlib.new(name)
    with repo.serving.open_read(key) as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _release_files(release: bytes) -> dict[str, dict[str, tuple[str, int]]]:
    """{path: {"sha256": (hex, size), "sha512": ..., "md5sum": ...}} from a Release text."""
    from debian.deb822 import Release

    rel = Release(release)
    files: dict[str, dict[str, tuple[str, int]]] = {}
    for field in ("md5sum", "sha256", "sha512"):
        for item in rel.get(field, []):
            files.setdefault(item["name"], {})[field] = (item[field], int(item["size"]))
    return files


def _unsigned_keys(repo: Repository, what: str, signers: list[tuple[str, str]]) -> list[str]:
    """A problem for each configured key with no good signature, by itself or by one of
    its signing subkeys (a primary fingerprint in the config matches its subkeys)."""
    return [
        f"{what}: no valid signature by configured key {key}"
        for key in repo.config.signing.keys
        if not any(key_matches(key, signing, primary) for signing, primary in signers)
    ]


def _index_problems(
    repo: Repository,
    channel: str,
    path: str,
    sums: dict[str, tuple[str, int]],
    files: dict[str, dict[str, tuple[str, int]]],
    *,
    fast: bool,
) -> list[str]:
    """One file Release lists: its plain path and its by-hash copies (what apt
    fetches).  Each index is hashed once: ``fast`` checks the by-hash copies' hashes
    and the plain path's size only; a full check hashes both."""
    problems: list[str] = []
    storage = repo.serving
    sha256, size = sums.get("sha256", ("", -1))
    key = dists_key(channel, path)
    native = repo.config.engine == "native"
    listed_only = native and not served(repo.config, path)
    try:
        info = storage.stat(key)
    except NotFound:
        # Release lists the uncompressed Packages even where only .gz/.xz are served
        if not listed_only:
            problems.append(f"{key}: listed in Release but missing")
    else:
        if info.size != size:
            problems.append(f"{key}: size {info.size} but Release says {size}")
        elif not fast and _digest(repo, key, "sha256") != sha256:
            problems.append(f"{key}: SHA256 differs from Release")
    if listed_only:
        if not fast:
            problems += _listed_problems(repo, channel, path, sha256, size, files)
        return problems  # listed only (docs/s3.md): no file, no by-hash copy
    base = key.rsplit("/", 1)[0]
    for kind, name in (("SHA256", "sha256"), ("SHA512", "sha512")):
        if name not in sums:
            continue
        by_hash = f"{base}/by-hash/{kind}/{sums[name][0]}"
        try:
            if _digest(repo, by_hash, name) != sums[name][0]:
                problems.append(f"{by_hash}: content does not match its name")
        except NotFound:
            problems.append(f"{by_hash}: missing (apt fetches indexes by hash)")
    return problems


def _listed_problems(
    repo: Repository,
    channel: str,
    path: str,
    sha256: str,
    size: int,
    files: dict[str, dict[str, tuple[str, int]]],
) -> list[str]:
    """A listed-only uncompressed index: its digest is the decompressed text of the
    compressed files served beside it (streamed, bounded memory)."""
    import gzip
    import lzma

    problems: list[str] = []
    for suffix, opener in ((".gz", gzip.open), (".xz", lzma.open)):
        if path + suffix not in files:
            continue
        h, n = hashlib.sha256(), 0
        try:
            key = dists_key(channel, path + suffix)
            with repo.serving.open_read(key) as raw, opener(raw) as fh:
                while chunk := fh.read(CHUNK):
                    h.update(chunk)
                    n += len(chunk)
        except (OSError, EOFError, lzma.LZMAError, NotFound) as exc:
            problems.append(f"{dists_key(channel, path + suffix)}: cannot decompress ({exc})")
            continue
        if (h.hexdigest(), n) != (sha256, size):
            problems.append(
                f"{dists_key(channel, path + suffix)}: decompressed text differs from "
                f"the {path} listed in Release"
            )
    return problems


def verify_channel(repo: Repository, channel: str, *, fast: bool) -> list[str]:
    problems: list[str] = []
    storage = repo.serving  # dists/ and pool/ as apt sees them (aptly's tree with aptly)
    where = f"dists/{channel}"
    try:
        keyring = repo.storage.read_bytes("archive-keyring.asc")
    except NotFound:
        return [f"{channel}: archive-keyring.asc is missing; run `aptship reindex`"]
    if repo.states.read_head(channel).generation == 0 and not storage.exists(
        dists_key(channel, "InRelease")
    ):
        return []  # never published and empty: nothing to check
    try:
        inrelease = storage.read_bytes(dists_key(channel, "InRelease"))
        release = storage.read_bytes(dists_key(channel, "Release"))
        release_gpg = storage.read_bytes(dists_key(channel, "Release.gpg"))
    except NotFound as exc:
        return [f"{channel}: {exc.message}; run `aptship reindex`"]
    with Gpgv(keyring) as gpgv:
        checked = gpgv.check(inrelease)
        detached_ok = gpgv.check(release_gpg, release).ok
    if not checked.ok:
        out = checked.output.strip()
        last = out.splitlines()[-1] if out else "gpgv failed"
        problems.append(
            f"{where}/InRelease: signature does not verify with archive-keyring.asc ({last})"
        )
    elif repo.config.engine == "native":  # aptly signs with the keys of its own config
        problems += _unsigned_keys(repo, f"{where}/InRelease", checked.signers)
    if not detached_ok:
        problems.append(f"{where}/Release.gpg: signature does not verify against Release")
    if release not in inrelease.replace(b"\r\n", b"\n"):
        problems.append(f"{where}/InRelease: signed text differs from Release")
    files = _release_files(release)
    for path, sums in sorted(files.items()):
        problems += _index_problems(repo, channel, path, sums, files, fast=fast)
    head = repo.states.read_head(channel)
    record = read_record(repo.storage, channel)
    if repo.config.engine != "native":
        pass  # aptly publishes from its own database: there is no record to compare
    elif record.generation < head.generation:
        problems.append(
            f"{channel}: state generation {head.generation} is not published "
            f"(dists/ shows {record.generation}); run `aptship reindex --channel {channel}`"
        )
    elif record.inrelease.encode() != inrelease:
        problems.append(
            f"{where}/InRelease: differs from the published record; run `aptship reindex`"
        )
    problems += _state_problems(repo, channel, fast=fast)
    return problems


def _state_problems(repo: Repository, channel: str, *, fast: bool) -> list[str]:
    """Every state shard the head names, and every entry's pool file."""
    problems: list[str] = []
    storage = repo.serving
    view = repo.states.view(channel)
    for bucket, sha in sorted(view.head.shards.items()):
        try:
            view.shard(bucket)
        except (NotFound, StorageError) as exc:
            problems.append(
                f"{shard_key(channel, bucket, sha)}: {exc.message} (channel {channel!r} "
                f"lost the entries of bucket {bucket}; restore it from a backup, or run "
                f"`aptship reindex --channel {channel}` to rebuild them from dists/)"
            )
            del view.head.shards[bucket]  # check what is left
    for _name, ps in view.packages():
        for e in ps.entries:
            try:
                info = storage.stat(e.filename)
            except NotFound:
                problems.append(f"{e.filename}: missing ({e.package} {e.version} in {channel})")
                continue
            if info.size != e.size:
                problems.append(f"{e.filename}: size {info.size}, index says {e.size}")
            elif not fast and _digest(repo, e.filename, "sha256") != e.sha256:
                problems.append(f"{e.filename}: SHA256 differs from the index (corrupted)")
    return problems


def verify(repo: Repository, *, fast: bool = False, channels: list[str] | None = None) -> list[str]:
    problems: list[str] = []
    # a configured channel with distributions: each of its suites (publisher.releases)
    names = [s.name for ch in channels for s in repo.config.suites(ch)] if channels else None
    for name in names or list(repo.config.channels):
        repo.config.channel(name)
        try:
            problems += verify_channel(repo, name, fast=fast)
        except StorageError as exc:
            problems.append(f"{name}: {exc.message}")
    return problems + repo.split_releases()
