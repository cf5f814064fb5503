"""Local directory storage: the embedded default backend.

* Atomic writes: a temporary file in the target directory, fsync, then
  ``os.replace`` (plain and compare-and-swap writes) or ``os.link`` (create-only
  writes, which fail atomically when the key exists).
* A batch of pool files (:meth:`LocalStorage.write_files`) is written, synced in
  parallel, linked, and its directories synced once: the same order, one wait.
* Compare-and-swap holds ``flock`` on the key's directory while it checks the ETag
  and replaces the file.  The kernel drops the lock when the process dies, so there
  is no lock file that can go stale.
* ETags are ``<inode>-<mtime_ns>-<size>``: every write makes a new inode.
* Every key is checked (:func:`check_key`) and the resolved path must stay inside
  the root, so ``..``, absolute keys and escaping symlinks are refused.  A key's
  directory is resolved once per storage object (then remembered); its last
  component is resolved on every call when it is a symlink.  A directory replaced by
  an escaping symlink after it was resolved needs write access to the root itself.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from publisher.errors import (
    InvalidPackage,
    NotFound,
    PreconditionFailed,
    StorageError,
    UsageError,
)
from publisher.storage.base import ObjectInfo, PutResult
from publisher.storage.keys import check_key

CHUNK = 1024 * 1024
_TMP_PREFIX = ".tmp-"
DIR_CACHE = 4096  # resolved directories remembered per LocalStorage
WRITE_THREADS = 2  # threads copying a batch into temporary files (write_files) ...
SYNC_THREADS = 16  # ... and threads syncing them
SYNC_GROUP = 16  # files one task writes, then hands to a syncing thread
BATCH_CHUNK = 512  # files of a batch written before they are linked into place


def _etag(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


@dataclass(frozen=True)
class _Staged:
    path: str  # where the file goes
    tmp: str  # its written temporary file
    put: PutResult


def _write_error(path: str | Path, exc: OSError) -> StorageError:
    if exc.errno == errno.ENOSPC:
        return StorageError(f"no space left on device writing {path}")
    return StorageError(f"cannot write {path}: {exc.strerror}")


def _fsync_files(paths: list[str]) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _write_error(path, exc) from exc


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"cannot open {path}: {exc.strerror}") from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        raise StorageError(f"cannot sync {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)


_Pending = list["Future[tuple[list[_Staged], Future[None]]]"]  # a chunk's groups in flight


def _settle(groups: _Pending) -> tuple[list[_Staged], BaseException | None]:
    """Wait for a chunk's groups, copied and synced; its files, and the first failure
    (a group that fails removes its own files)."""
    staged: list[_Staged] = []
    syncs: list[Future[None]] = []
    failure: BaseException | None = None
    for future in groups:
        try:
            group, synced = future.result()
        except BaseException as exc:
            failure = failure or exc
            continue
        staged += group
        syncs.append(synced)
    for synced in syncs:
        try:
            synced.result()
        except BaseException as exc:
            failure = failure or exc
    return staged, failure


def _remove(staged: list[_Staged]) -> None:
    for item in staged:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(item.tmp)


class LocalStorage:
    name = "local"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self._real_root = os.path.realpath(self.root)
        self._root_str = str(self.root)
        self._real_dirs: dict[str, str] = {}  # directory key -> its checked real path

    def describe(self) -> str:
        return str(self.root)

    # -- path resolution -------------------------------------------------------
    def _inside(self, real: str) -> bool:
        return real == self._real_root or real.startswith(self._real_root + os.sep)

    def _real_dir(self, parent: str) -> str:
        """The real path of directory key ``parent`` ("" is the root), checked inside
        the root.  Existing directories are remembered (bounded): resolving every
        component of every key (an lstat each) was most of ``verify --fast``."""
        real = self._real_dirs.get(parent)
        if real is None:
            real = self._resolve_dir(parent) if parent else self._real_root
            if not self._inside(real):
                raise UsageError(f"storage key {parent!r} resolves outside the repository")
            if os.path.isdir(real):
                if len(self._real_dirs) >= DIR_CACHE:
                    self._real_dirs.clear()
                self._real_dirs[parent] = real
        return real

    def _resolve_dir(self, parent: str) -> str:
        """``realpath(root/parent)`` from its own parent's real path: one lstat, also
        for a directory that does not exist yet (a new pool directory)."""
        up, _, name = parent.rpartition("/")
        real = os.path.join(self._real_dir(up), name)
        try:
            link = stat.S_ISLNK(os.lstat(real).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            link = False
        return os.path.realpath(real) if link else real

    def _path(self, key: str) -> Path:
        self._checked(key)
        return self.root / key

    def _checked(self, key: str) -> str:
        """The path of ``key`` as a string, after every check of :meth:`_path`."""
        check_key(key)
        parent, _, name = key.rpartition("/")
        real = os.path.join(self._real_dir(parent), name)
        if os.path.islink(real):  # the last component is resolved whenever it is a link
            real = os.path.realpath(real)
        if not self._inside(real):
            raise UsageError(f"storage key {key!r} resolves outside the repository")
        return os.path.join(self._root_str, key)

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    def presigned_url(self, key: str, expires: int = 300) -> None:
        """A directory has no URLs of its own: files are served by the server."""
        return None

    # -- reads -----------------------------------------------------------------
    def _open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            fh = path.open("rb")
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{key} not found") from None
        except IsADirectoryError:
            raise NotFound(f"{key} not found") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror}") from exc
        return fh

    def read_bytes(self, key: str) -> bytes:
        with self._open(key) as fh:
            return fh.read()

    def read_with_etag(self, key: str) -> tuple[bytes, str]:
        with self._open(key) as fh:
            st = os.fstat(fh.fileno())
            return fh.read(), _etag(st)

    def open_read(self, key: str) -> BinaryIO:
        return self._open(key)

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{key} not found") from None
        if not path.is_file():
            raise NotFound(f"{key} not found")
        return ObjectInfo(key=key, size=st.st_size, mtime=st.st_mtime, etag=_etag(st))

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    def sizes(self, keys: Sequence[str]) -> dict[str, int]:
        """One lstat each below the directory's checked real path (cached): cheaper
        here than walking the pool's directories.  A link is resolved and checked
        as every read does (:meth:`_checked`)."""
        found: dict[str, int] = {}
        dirs: dict[str, str | None] = {}  # for this call: a missing directory once
        lstat, is_link, is_file = os.lstat, stat.S_ISLNK, stat.S_ISREG
        for key in keys:  # 10,000 keys take about 70 ms of lstat here: keep the rest lean
            try:
                check_key(key)
                parent, _, name = key.rpartition("/")
                if parent not in dirs:
                    real = self._real_dir(parent)  # remembered there only if it exists
                    exists = parent in self._real_dirs or os.path.isdir(real)
                    dirs[parent] = real if exists else None
                if dirs[parent] is None:
                    continue
                st = lstat(f"{dirs[parent]}/{name}")
                if is_link(st.st_mode):
                    st = os.stat(self._checked(key))
            except (UsageError, FileNotFoundError, NotADirectoryError):
                continue
            if is_file(st.st_mode):
                found[key] = st.st_size
        return found

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self.root / prefix if prefix else self.root
        if prefix:
            check_key(prefix.rstrip("/"))
        if not base.is_dir():
            return
        root = os.fspath(self.root)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            # below the root: the key is the rest of the path (no relpath per file)
            rel = dirpath[len(root) :].lstrip(os.sep).replace(os.sep, "/")
            head = f"{rel}/" if rel else ""
            for name in sorted(filenames):
                if name.startswith(_TMP_PREFIX):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue
                yield ObjectInfo(
                    key=head + name, size=st.st_size, mtime=st.st_mtime, etag=_etag(st)
                )

    # -- writes ----------------------------------------------------------------
    def _tmp_for(self, path: Path) -> Path:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {path.parent}: {exc.strerror}") from exc
        return path.parent / f"{_TMP_PREFIX}{secrets.token_hex(8)}"

    def _commit(
        self, tmp: Path, path: Path, key: str, create_only: bool, if_match: str | None
    ) -> str:
        try:
            if create_only:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise PreconditionFailed(f"{key} already exists") from None
            elif if_match is not None:
                dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    fcntl.flock(dir_fd, fcntl.LOCK_EX)
                    try:
                        current = _etag(os.stat(path))
                    except FileNotFoundError:
                        current = None
                    if current != if_match:
                        raise PreconditionFailed(f"{key} changed since it was read")
                    os.replace(tmp, path)
                finally:
                    os.close(dir_fd)  # closing drops the flock
            else:
                os.replace(tmp, path)
            return _etag(os.stat(path))
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def write_bytes(
        self,
        key: str,
        data: bytes,
        *,
        create_only: bool = False,
        if_match: str | None = None,
        content_type: str | None = None,
    ) -> str:
        path = self._path(key)
        tmp = self._tmp_for(path)
        try:
            with tmp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise StorageError(f"cannot write {path}: {exc.strerror}") from exc
        return self._commit(tmp, path, key, create_only, if_match)

    def write_stream(
        self,
        key: str,
        stream: BinaryIO,
        *,
        create_only: bool = False,
        hash_names: tuple[str, ...] = ("md5", "sha1", "sha256"),
        content_type: str | None = None,
    ) -> PutResult:
        path = self._path(key)
        tmp = self._tmp_for(path)
        hashers = {n: hashlib.new(n) for n in hash_names}
        size = 0
        try:
            with tmp.open("wb") as fh:
                while chunk := stream.read(CHUNK):
                    size += len(chunk)
                    for h in hashers.values():
                        h.update(chunk)
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            if exc.errno == errno.ENOSPC:
                raise StorageError(f"no space left on device writing {path}") from exc
            raise StorageError(f"cannot write {path}: {exc.strerror}") from exc
        etag = self._commit(tmp, path, key, create_only, None)
        return PutResult(
            size=size, etag=etag, hashes={n: h.hexdigest() for n, h in hashers.items()}
        )

    def copy(self, src: str, dst: str) -> str:
        """``dst`` becomes a hard link to ``src`` (through a temporary name and
        ``os.replace``).  Safe because every write replaces a key's file by rename,
        so a later write of ``dst`` never changes ``src``; ``src`` is already durable.
        Where links are not possible (EXDEV, EPERM) the bytes are copied.

        The link's mtime is set to now (the source's with it: one inode) before it
        takes ``dst``'s place, as a new file's would be.  ``src`` may be older than
        the file it replaces (an index back to earlier bytes), and the server answers
        ``If-Modified-Since`` from the mtime: an older one would be a 304 for changed
        content."""
        source, path = self._path(src), self._path(dst)
        tmp = self._tmp_for(path)
        try:
            os.link(source, tmp)
            os.utime(tmp)
        except (FileNotFoundError, NotADirectoryError):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise NotFound(f"{src} not found") from None
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise StorageError(f"cannot link {source} to {path}: {exc.strerror}") from exc
            return self.write_bytes(dst, self.read_bytes(src))
        return self._commit(tmp, path, dst, False, None)

    def _stage(
        self, key: str, src: str | os.PathLike[str], hash_names: tuple[str, ...], made: set[str]
    ) -> _Staged:
        """Copy ``src`` next to ``key`` into a temporary file, hashing on the way
        (``made``: directories known to exist)."""
        path = self._checked(key)
        parent = os.path.dirname(path)
        if parent not in made:
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create {parent}: {exc.strerror}") from exc
            made.add(parent)
        hashers = [hashlib.new(n) for n in hash_names]
        size = 0
        try:
            source = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            name = os.path.basename(src)
            raise InvalidPackage(f"{name}: cannot read it ({exc.strerror})") from None
        tmp = os.path.join(parent, f"{_TMP_PREFIX}{secrets.token_hex(8)}")
        try:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            try:
                while chunk := os.read(source, CHUNK):
                    size += len(chunk)
                    for h in hashers:
                        h.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(out, view) :]
                etag = _etag(os.fstat(out))
            finally:
                os.close(out)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise _write_error(path, exc) from exc
        finally:
            os.close(source)
        hashes = {n: h.hexdigest() for n, h in zip(hash_names, hashers, strict=True)}
        return _Staged(path, tmp, PutResult(size=size, etag=etag, hashes=hashes))

    def write_files(
        self,
        items: Sequence[tuple[str, str | os.PathLike[str]]],
        *,
        hash_names: tuple[str, ...] = ("md5", "sha1", "sha256"),
    ) -> builtins.list[PutResult | None]:
        """Store each ``(key, file)`` create-only, as one durable batch.

        Chunk by chunk, ``WRITE_THREADS`` threads copy the files into temporary files
        next to their keys (hashing on the way), ``SYNC_GROUP`` files per task, and
        hand each group to ``SYNC_THREADS`` threads that fsync them.  Copying is CPU
        work, so few threads do it (more only contend in the kernel); fsync is a wait,
        and concurrent fsyncs share the file system's journal commits, where one after
        another each waits for its own.  Only once a chunk is synced is each of its
        files linked into place (while the next chunk is copied), so a pool file
        always has its full bytes, whatever the moment of a crash.  Last, every
        directory that gained an entry is fsynced once, so that the caller commits a
        state only over durable names.  A crash leaves at most two chunks of
        temporary files (hidden from :meth:`list`, like the one of a single write).
        """
        results: builtins.list[PutResult | None] = []
        dirs: set[str] = set()
        made: set[str] = set()
        chunks = [items[i : i + BATCH_CHUNK] for i in range(0, len(items), BATCH_CHUNK)]
        with (
            ThreadPoolExecutor(max_workers=WRITE_THREADS) as writers,
            ThreadPoolExecutor(max_workers=SYNC_THREADS) as syncers,
        ):

            def submit(chunk: Sequence[tuple[str, str | os.PathLike[str]]]) -> _Pending:
                return [
                    writers.submit(
                        self._stage_group, chunk[i : i + SYNC_GROUP], hash_names, made, syncers
                    )
                    for i in range(0, len(chunk), SYNC_GROUP)
                ]

            ahead = submit(chunks[0]) if chunks else []
            for n in range(len(chunks)):
                staged, failure = _settle(ahead)
                ahead = submit(chunks[n + 1]) if failure is None and n + 1 < len(chunks) else []
                try:
                    if failure is not None:
                        raise failure
                    for item in staged:
                        results.append(self._link(item))
                        parent = os.path.dirname(item.path)
                        if parent not in dirs:
                            dirs.update(self._parents(parent))
                except BaseException:
                    _remove(_settle(ahead)[0])  # the next chunk, copied meanwhile
                    raise
                finally:
                    _remove(staged)
            list(syncers.map(_fsync_dir, sorted(dirs)))
        return results

    def _stage_group(
        self,
        group: Sequence[tuple[str, str | os.PathLike[str]]],
        hash_names: tuple[str, ...],
        made: set[str],
        syncers: ThreadPoolExecutor,
    ) -> tuple[builtins.list[_Staged], Future[None]]:
        """Stage a few files and hand them to ``syncers`` (one task of a writing
        thread); return them and their fsync's future."""
        staged: builtins.list[_Staged] = []
        try:
            for key, src in group:
                staged.append(self._stage(key, src, hash_names, made))
        except BaseException:
            _remove(staged)
            raise
        return staged, syncers.submit(_fsync_files, [item.tmp for item in staged])

    def _link(self, item: _Staged) -> PutResult | None:
        try:
            os.link(item.tmp, item.path)
        except FileExistsError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot write {item.path}: {exc.strerror}") from exc
        return item.put

    def _parents(self, parent: str) -> Iterator[str]:
        """Directory ``parent`` and its ancestors up to the root (those a write may
        have created)."""
        root = str(self.root)
        while parent.startswith(root) and parent != root:
            yield parent
            parent = os.path.dirname(parent)
        yield root

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"cannot delete {path}: {exc.strerror}") from exc
