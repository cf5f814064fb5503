"""``aptship verify``: check a repository the way apt and an auditor would.

For every channel: the InRelease and Release.gpg signatures (gpgv against the
published ``archive-keyring.asc``), every index's size and hashes against Release
and every by-hash copy, that the published record shows the newest committed state,
and that every entry's pool file exists with the right size and SHA256.  Returns a
list of problems; empty means healthy.

``fast`` checks what apt relies on and no pool byte: each index is hashed once (its
by-hash copy, which apt fetches; the uncompressed ``Packages`` that Release only
lists is skipped), the pool files are the ones a verified ``Packages`` names, checked
by size from one listing of each pool subtree they are in (one stat per file on a
directory, one request per 1,000 keys on S3), and the state shards the head names
must exist (the full check reads and hashes them and walks every entry).
"""

from __future__ import annotations

import hashlib
import lzma
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, BinaryIO

from publisher import codecs
from publisher.dists import dists_key, read_record, served
from publisher.errors import NotFound, StorageError
from publisher.index import SUFFIX
from publisher.signing import Gpgv, key_matches
from publisher.state import shard_key

if TYPE_CHECKING:
    from publisher.repo import Repository

CHUNK = 1024 * 1024
HASH_FIELDS = ("md5sum", "sha256", "sha512")
# Filename and Size as aptship renders them (Entry.stanza); other stanzas are parsed alone
_POOL_REF = re.compile(rb"\nFilename: ([^\n]+)\nSize: ([0-9]+)\n")  # a literal prefix: fast
_FILENAME = re.compile(rb"^Filename: ([^\n]+)$", re.M)
_SIZE = re.compile(rb"^Size: ([0-9]+)$", re.M)


def _digest(repo: Repository, key: str, name: str) -> str:
    h = hashlib.new(name)
    with repo.serving.open_read(key) as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _release_files(release: bytes) -> dict[str, dict[str, tuple[str, int]]]:
    """{path: {"sha256": (hex, size), "sha512": ..., "md5sum": ...}} from a Release text
    (its hash fields: " <digest> <size> <path>" lines; a malformed line is skipped, so
    the file it names shows as a problem)."""
    files: dict[str, dict[str, tuple[str, int]]] = {}
    field = ""
    for line in release.decode("utf-8", "replace").splitlines():
        if not line[:1].isspace():
            field = line.partition(":")[0].strip().lower()
            continue
        words = line.split()
        if field in HASH_FIELDS and len(words) == 3 and words[1].isdigit():
            files.setdefault(words[2], {})[field] = (words[0], int(words[1]))
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
    verified: dict[str, str] | None = None,
) -> list[str]:
    """One file Release lists: its plain path and its by-hash copies (what apt
    fetches).  Each index is hashed once: ``fast`` checks the by-hash copies' hashes
    and the plain path's size only; a full check hashes both.  ``verified`` gets
    {path: by-hash key} of each index whose SHA256 copy matches Release."""
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
            elif kind == "SHA256" and verified is not None:
                verified[path] = by_hash
        except NotFound:
            problems.append(f"{by_hash}: missing (apt fetches indexes by hash)")
    return problems


_UNREADABLE: tuple[type[Exception], ...] = (*codecs.GZIP_ERRORS, lzma.LZMAError, NotFound)


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
    problems: list[str] = []
    for suffix, opener in ((".gz", codecs.open_gzip), (".xz", lzma.open)):
        if path + suffix not in files:
            continue
        h, n = hashlib.sha256(), 0
        try:
            key = dists_key(channel, path + suffix)
            with repo.serving.open_read(key) as raw, opener(raw) as fh:
                while chunk := fh.read(CHUNK):
                    h.update(chunk)
                    n += len(chunk)
        except _UNREADABLE as exc:
            problems.append(f"{dists_key(channel, path + suffix)}: cannot decompress ({exc})")
            continue
        if (h.hexdigest(), n) != (sha256, size):
            problems.append(
                f"{dists_key(channel, path + suffix)}: decompressed text differs from "
                f"the {path} listed in Release"
            )
    return problems


def verify_channel(
    repo: Repository, channel: str, *, fast: bool, pool: _Pool | None = None
) -> list[str]:
    problems: list[str] = []
    storage = repo.serving  # dists/ and pool/ as apt sees them (aptly's tree with aptly)
    where = f"dists/{channel}"
    try:
        keyring = repo.storage.read_bytes("archive-keyring.asc")
    except NotFound:
        return [f"{channel}: archive-keyring.asc is missing; run `aptship reindex`"]
    head = repo.states.read_head(channel)  # before the record: a commit in between is no problem
    if head.generation == 0 and not storage.exists(dists_key(channel, "InRelease")):
        return []  # never published and empty: nothing to check
    try:
        inrelease = storage.read_bytes(dists_key(channel, "InRelease"))
        release = storage.read_bytes(dists_key(channel, "Release"))
        release_gpg = storage.read_bytes(dists_key(channel, "Release.gpg"))
    except NotFound as exc:
        return [f"{channel}: {exc.message}; run `aptship reindex`"]
    with Gpgv(keyring) as gpgv, ThreadPoolExecutor(max_workers=1) as side:
        detached = side.submit(gpgv.check, release_gpg, release)  # two gpgv at once
        checked = gpgv.check(inrelease)
        detached_ok = detached.result().ok
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
    verified: dict[str, str] = {}
    for path, sums in sorted(files.items()):
        problems += _index_problems(repo, channel, path, sums, files, fast=fast, verified=verified)
    record = read_record(repo.storage, channel)
    pool = pool if pool is not None else _Pool(repo)
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
    if fast:
        problems += _shards_present(repo, channel, head.shards)
        problems += _pool_problems(pool, _pool_refs(repo, channel, files, verified), channel)
    else:
        problems += _state_problems(repo, channel)
    return problems


def _shards_present(repo: Repository, channel: str, shards: dict[str, str]) -> list[str]:
    """Every shard the head names exists (:meth:`Storage.sizes`; the full check reads
    them)."""
    present = repo.storage.sizes([shard_key(channel, b, sha) for b, sha in shards.items()])
    return [
        _lost_shard(channel, bucket, sha, f"{shard_key(channel, bucket, sha)} not found")
        for bucket, sha in sorted(shards.items())
        if shard_key(channel, bucket, sha) not in present
    ]


def _lost_shard(channel: str, bucket: str, sha: str, why: str) -> str:
    return (
        f"{shard_key(channel, bucket, sha)}: {why} (channel {channel!r} "
        f"lost the entries of bucket {bucket}; restore it from a backup, or run "
        f"`aptship reindex --channel {channel}` to rebuild them from dists/)"
    )


def _pool_refs(
    repo: Repository,
    channel: str,
    files: dict[str, dict[str, tuple[str, int]]],
    verified: dict[str, str],
) -> dict[str, int]:
    """{pool key: size} of every stanza of each architecture's ``Packages``, read from
    a by-hash copy that matched Release (plain if stored, else .gz, else .xz)."""
    refs: dict[str, int] = {}
    for plain in sorted(p for p in files if p.endswith("/Packages")):
        for fmt in ("plain", "gz", "xz"):
            key = verified.get(plain + SUFFIX[fmt])
            if key is not None:
                with repo.serving.open_read(key) as raw:
                    for name, size in _stanza_refs(_text_chunks(raw, fmt)):
                        refs[name] = size
                break
    return refs


def _text_chunks(raw: BinaryIO, fmt: str) -> Iterator[bytes]:
    """The decompressed text of an index, in bounded chunks."""
    if fmt == "plain":
        while chunk := raw.read(CHUNK):
            yield chunk
        return
    with codecs.open_gzip(raw) if fmt == "gz" else lzma.LZMAFile(raw) as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def _stanza_refs(chunks: Iterator[bytes]) -> Iterator[tuple[str, int]]:
    """(Filename, Size) of every stanza, whole stanzas at a time (bounded memory)."""
    rest = b""
    for chunk in chunks:
        text = rest + chunk
        cut = text.rfind(b"\n\n")
        if cut < 0:
            rest = text
            continue
        rest = text[cut + 2 :]
        yield from _block_refs(text[: cut + 2])
    yield from _block_refs(rest)


def _block_refs(block: bytes) -> Iterator[tuple[str, int]]:
    found = _POOL_REF.findall(block)
    if len(found) != block.count(b"\nFilename: "):  # fields in another order: stanza by stanza
        found = []
        for stanza in block.split(b"\n\n"):
            name, size = _FILENAME.search(stanza), _SIZE.search(stanza)
            if name and size:
                found.append((name.group(1), size.group(1)))
    for name, size in found:
        yield name.decode("utf-8", "replace"), int(size)


class _Pool:
    """Pool file sizes (:meth:`Storage.sizes`), remembered for the run: channels
    share most pool files."""

    def __init__(self, repo: Repository) -> None:
        self.storage = repo.serving
        self._known: dict[str, int] = {}

    def sizes(self, keys: list[str]) -> dict[str, int]:
        self._known.update(self.storage.sizes([k for k in keys if k not in self._known]))
        return {k: self._known[k] for k in keys if k in self._known}


def _pool_problems(pool: _Pool, refs: dict[str, int], channel: str) -> list[str]:
    keys = sorted(refs)
    sizes = pool.sizes(keys)
    problems = []
    for key in keys:
        if key not in sizes:
            problems.append(f"{key}: missing (listed in dists/{channel})")
        elif sizes[key] != refs[key]:
            problems.append(f"{key}: size {sizes[key]}, index says {refs[key]}")
    return problems


def _state_problems(repo: Repository, channel: str) -> list[str]:
    """Every state shard the head names (read and hashed), and every entry's pool
    file (size and SHA256)."""
    problems: list[str] = []
    storage = repo.serving
    view = repo.states.view(channel)
    for bucket, sha in sorted(view.head.shards.items()):
        try:
            view.shard(bucket)
        except (NotFound, StorageError) as exc:
            problems.append(_lost_shard(channel, bucket, sha, exc.message))
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
            elif _digest(repo, e.filename, "sha256") != e.sha256:
                problems.append(f"{e.filename}: SHA256 differs from the index (corrupted)")
    return problems


def verify(repo: Repository, *, fast: bool = False, channels: list[str] | None = None) -> list[str]:
    problems: list[str] = []
    # a configured channel with distributions: each of its suites (publisher.releases)
    names = [s.name for ch in channels for s in repo.config.suites(ch)] if channels else None
    pool = _Pool(repo)
    for name in names or list(repo.config.channels):
        repo.config.channel(name)
        try:
            problems += verify_channel(repo, name, fast=fast, pool=pool)
        except StorageError as exc:
            problems.append(f"{name}: {exc.message}")
    return problems + repo.split_releases()
