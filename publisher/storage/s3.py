"""S3 storage: the same key -> bytes store on an S3 bucket (AWS or compatible).

* Object key = ``prefix + "/" + key`` (or just ``key`` without a prefix); every key
  is checked with :func:`check_key` before any request is made.
* ``create_only`` writes send ``If-None-Match: *`` and ``if_match`` writes send
  ``If-Match: <etag>``; S3 answers 412 (or 409 ``ConditionalRequestConflict`` when
  two conditional writes race), both become :class:`PreconditionFailed`.  A missing
  object under ``if_match`` is a failed precondition too, as in the local backend.
* ETags are kept exactly as S3 returns them (with the quotes), so an ETag from
  :meth:`S3Storage.stat`, :meth:`S3Storage.read_with_etag` or a write can be passed
  back as ``if_match``.
* :meth:`S3Storage.write_stream` reads 8 MiB at a time and hashes while uploading.
  Streams shorter than one chunk are one PutObject; longer ones a multipart upload
  (aborted on any failure) whose CompleteMultipartUpload carries
  ``If-None-Match: *`` for ``create_only`` (supported by botocore and moto, and
  checked by the contract tests).  A HEAD before the upload fails early if the key
  already exists, so a conflicting upload does not send the whole file first.
* The sha256 of the content is stored as ``x-amz-meta-sha256`` so callers can compare
  content without downloading (:meth:`S3Storage.content_sha256`).  Multipart uploads
  must declare metadata before the data is sent, so a seekable stream is hashed in
  a first pass and then rewound (and the upload pass must produce the same digest).
  **Fallback:** a large *non-seekable* stream is uploaded without the metadata;
  ``content_sha256`` then returns None and callers must download to compare.
* Every boto3/botocore error is translated here into :class:`NotFound`,
  :class:`PreconditionFailed` or :class:`StorageError` naming the bucket and key.
  Messages carry the S3 error code and message only, never headers or credentials.
* ``request_count`` / ``bytes_sent`` count HTTP requests (retries included) through a
  ``before-send`` event hook, which also logs each request to ``aptship.s3`` at
  DEBUG level (operation and key only).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections.abc import Iterator, MutableSequence, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn
from urllib.parse import unquote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from publisher.errors import ConfigError, NotFound, PreconditionFailed, StorageError
from publisher.storage.base import ObjectInfo, PutResult, sizes_by_listing
from publisher.storage.keys import check_key

if TYPE_CHECKING:
    from publisher.config import StorageConfig

CHUNK = 8 * 1024 * 1024  # upload part size and the most read from a stream at once
READ_BUFFER = 1024 * 1024  # buffer of the streams returned by open_read
SHA256_META = "sha256"
log = logging.getLogger("aptship.s3")


def make_client(
    cfg: StorageConfig,
    *,
    max_attempts: int = 4,
    connect_timeout: float = 5.0,
    read_timeout: float = 60.0,
) -> Any:
    """A boto3 S3 client for ``cfg`` using the default credential chain."""
    config = Config(
        region_name=cfg.region,
        # total_max_attempts counts the first attempt; botocore's "max_attempts" would not
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        s3={"addressing_style": "path" if cfg.path_style else "auto"},
    )
    try:
        return boto3.session.Session().client(
            "s3", endpoint_url=cfg.endpoint_url or None, config=config
        )
    except (BotoCoreError, ValueError) as exc:
        raise StorageError(f"cannot create an S3 client for bucket {cfg.bucket}: {exc}") from exc


def _read_chunk(stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes; shorter only at end of stream."""
    data = stream.read(size)
    if not data or len(data) >= size:
        return data
    parts, got = [data], len(data)
    while got < size and (more := stream.read(size - got)):
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _start_offset(stream: BinaryIO) -> int | None:
    """The current offset of a seekable stream, or None if it cannot be rewound."""
    try:
        return stream.tell() if stream.seekable() else None
    except (OSError, ValueError):
        return None


class _BodyReader(io.RawIOBase):
    """A raw stream over a botocore StreamingBody that translates its errors."""

    def __init__(self, body: Any, where: str) -> None:
        self._body = body
        self._where = where

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data: bytes = self._body.read(len(view))
        except (BotoCoreError, OSError) as exc:
            raise StorageError(f"S3 read of {self._where} failed: {exc}") from exc
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self._body.close()
        super().close()


class S3Storage:
    name = "s3"

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        sse: str | None = None,
        sse_kms_key_id: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self._client = client
        self._write_args: dict[str, str] = {}
        if sse:
            self._write_args["ServerSideEncryption"] = sse
        if sse_kms_key_id:
            self._write_args["SSEKMSKeyId"] = sse_kms_key_id
        self.request_count = 0
        self.bytes_sent = 0
        client.meta.events.register("before-send.s3", self._on_send)

    @classmethod
    def from_config(cls, cfg: StorageConfig) -> S3Storage:
        """The backend for ``[storage] type = "s3"``."""
        if not cfg.bucket:
            raise ConfigError("storage.bucket is required for s3 storage")
        return cls(
            make_client(cfg),
            cfg.bucket,
            cfg.prefix,
            sse=cfg.sse,
            sse_kms_key_id=cfg.sse_kms_key_id,
        )

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    # -- helpers ---------------------------------------------------------------
    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _where(self, obj_key: str) -> str:
        return f"s3://{self.bucket}/{obj_key}"

    def _on_send(self, request: Any, event_name: str = "", **_: Any) -> None:
        """botocore ``before-send`` hook; must return None so the request is sent."""
        self.request_count += 1
        body = request.body
        if isinstance(body, bytes | bytearray):
            self.bytes_sent += len(body)
        else:
            with contextlib.suppress(TypeError, ValueError):
                self.bytes_sent += int(request.headers.get("Content-Length") or 0)
        path = unquote(urlsplit(request.url).path).lstrip("/")
        if path == self.bucket or path.startswith(self.bucket + "/"):
            path = path[len(self.bucket) + 1 :]  # path-style addressing
        log.debug("S3 %s %s", event_name.rsplit(".", 1)[-1], path or "-")

    def _fail(
        self, exc: Exception, op: str, obj_key: str, *, missing_is_conflict: bool
    ) -> NoReturn:
        where = self._where(obj_key)
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                raise StorageError(f"S3 bucket {self.bucket} does not exist ({op})") from exc
            if code in ("NoSuchKey", "404", "NotFound"):
                if missing_is_conflict:
                    raise PreconditionFailed(f"{where} no longer exists") from exc
                raise NotFound(f"{where} not found") from exc
            if status == 412 or code == "PreconditionFailed":
                raise PreconditionFailed(f"{where}: precondition failed ({op})") from exc
            if code == "ConditionalRequestConflict":
                raise PreconditionFailed(f"{where}: conflicting concurrent write ({op})") from exc
            message = err.get("Message") or "no message"
            raise StorageError(f"S3 {op} {where} failed: {code or status} {message}") from exc
        raise StorageError(f"S3 {op} {where} failed: {exc}") from exc

    @contextlib.contextmanager
    def _errors(
        self, op: str, obj_key: str, *, missing_is_conflict: bool = False
    ) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError, OSError) as exc:
            self._fail(exc, op, obj_key, missing_is_conflict=missing_is_conflict)

    # -- reads -----------------------------------------------------------------
    def _get(self, key: str) -> tuple[Any, str]:
        obj_key = self._key(key)
        with self._errors("GetObject", obj_key):
            return self._client.get_object(Bucket=self.bucket, Key=obj_key), obj_key

    def read_bytes(self, key: str) -> bytes:
        return self.read_with_etag(key)[0]

    def read_with_etag(self, key: str) -> tuple[bytes, str]:
        resp, obj_key = self._get(key)
        with self._open_body(resp, obj_key) as fh:
            return fh.read(), str(resp["ETag"])

    def _open_body(self, resp: Any, obj_key: str) -> io.BufferedReader:
        return io.BufferedReader(_BodyReader(resp["Body"], self._where(obj_key)), READ_BUFFER)

    def open_read(self, key: str) -> BinaryIO:
        resp, obj_key = self._get(key)
        return self._open_body(resp, obj_key)

    def _head(self, key: str) -> dict[str, Any]:
        obj_key = self._key(key)
        with self._errors("HeadObject", obj_key):
            resp: dict[str, Any] = self._client.head_object(Bucket=self.bucket, Key=obj_key)
        return resp

    def stat(self, key: str) -> ObjectInfo:
        resp = self._head(key)
        return ObjectInfo(
            key=key,
            size=int(resp["ContentLength"]),
            mtime=resp["LastModified"].timestamp(),
            etag=str(resp["ETag"]),
        )

    def content_sha256(self, key: str) -> str | None:
        """The stored ``x-amz-meta-sha256`` of an object, None if it has none."""
        value = self._head(key).get("Metadata", {}).get(SHA256_META)
        return str(value) if value else None

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except NotFound:
            return False
        return True

    def sizes(self, keys: Sequence[str]) -> dict[str, int]:
        return sizes_by_listing(self, keys)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        if prefix:
            check_key(prefix.rstrip("/"))
        base = f"{self.prefix}/" if self.prefix else ""
        full = base + (prefix.rstrip("/") + "/" if prefix else "")
        paginator = self._client.get_paginator("list_objects_v2")
        with self._errors("ListObjectsV2", full):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    yield ObjectInfo(
                        key=str(obj["Key"])[len(base) :],
                        size=int(obj["Size"]),
                        mtime=obj["LastModified"].timestamp(),
                        etag=str(obj["ETag"]),
                    )

    def local_path(self, key: str) -> Path | None:
        check_key(key)
        return None

    def presigned_url(self, key: str, expires: int = 300) -> str:
        """A time-limited GET URL for ``key`` (no request is made)."""
        obj_key = self._key(key)
        with self._errors("presign GetObject", obj_key):
            url: str = self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": obj_key}, ExpiresIn=expires
            )
        return url

    # -- writes ----------------------------------------------------------------
    def _put_args(self, content_type: str | None, sha256: str | None) -> dict[str, Any]:
        args: dict[str, Any] = dict(self._write_args)
        if content_type:
            args["ContentType"] = content_type
        if sha256:
            args["Metadata"] = {SHA256_META: sha256}
        return args

    def _put(
        self,
        obj_key: str,
        data: bytes,
        args: dict[str, Any],
        create_only: bool,
        if_match: str | None,
    ) -> str:
        if create_only:
            args["IfNoneMatch"] = "*"
        elif if_match is not None:
            args["IfMatch"] = if_match
        with self._errors("PutObject", obj_key, missing_is_conflict=if_match is not None):
            resp = self._client.put_object(Bucket=self.bucket, Key=obj_key, Body=data, **args)
        return str(resp["ETag"])

    def write_bytes(
        self,
        key: str,
        data: bytes,
        *,
        create_only: bool = False,
        if_match: str | None = None,
        content_type: str | None = None,
    ) -> str:
        obj_key = self._key(key)
        args = self._put_args(content_type, hashlib.sha256(data).hexdigest())
        return self._put(obj_key, data, args, create_only, if_match)

    def write_stream(
        self,
        key: str,
        stream: BinaryIO,
        *,
        create_only: bool = False,
        hash_names: tuple[str, ...] = ("md5", "sha1", "sha256"),
        content_type: str | None = None,
    ) -> PutResult:
        obj_key = self._key(key)
        hashers = {n: hashlib.new(n) for n in (*hash_names, "sha256")}
        start = _start_offset(stream)
        with self._errors("read of the upload stream for", obj_key):
            chunk = _read_chunk(stream, CHUNK)
        if len(chunk) < CHUNK:  # the whole stream fits in one request
            for h in hashers.values():
                h.update(chunk)
            args = self._put_args(content_type, hashers["sha256"].hexdigest())
            etag = self._put(obj_key, chunk, args, create_only, None)
            size = len(chunk)
        else:
            if create_only and self.exists(key):
                raise PreconditionFailed(f"{self._where(obj_key)} already exists")
            sha256 = None
            if start is not None:
                sha256 = self._prehash(stream, obj_key, chunk, start)
            args = self._put_args(content_type, sha256)
            first, chunk = [chunk], b""  # _multipart must be able to drop the first part
            etag, size = self._multipart(obj_key, stream, first, hashers, args, create_only, sha256)
        digests = {n: hashers[n].hexdigest() for n in hash_names}
        return PutResult(size=size, etag=etag, hashes=digests)

    def _prehash(self, stream: BinaryIO, obj_key: str, first: bytes, start: int) -> str:
        """sha256 of a seekable stream, which is left just after ``first``."""
        h = hashlib.sha256(first)
        with self._errors("pre-hash read of the upload stream for", obj_key):
            more = stream.read(CHUNK)
            while more:
                h.update(more)
                more = b""  # drop it before reading the next one
                more = stream.read(CHUNK)
            stream.seek(start + len(first))
        return h.hexdigest()

    def _multipart(
        self,
        obj_key: str,
        stream: BinaryIO,
        first: MutableSequence[bytes],
        hashers: dict[str, Any],
        args: dict[str, Any],
        create_only: bool,
        expected_sha256: str | None,
    ) -> tuple[str, int]:
        """Upload ``first.pop()`` and the rest of ``stream`` as parts; return (etag, size).

        Each part is released before the next one is read, so at most about two
        chunks are alive at once.

        With ``expected_sha256`` (from the pre-hash pass) the upload is aborted, not
        completed, if the stream's content changed between the two passes.
        """
        bucket = self.bucket
        with self._errors("CreateMultipartUpload", obj_key):
            upload_id = self._client.create_multipart_upload(Bucket=bucket, Key=obj_key, **args)[
                "UploadId"
            ]
        parts: list[dict[str, Any]] = []
        chunk = first.pop()
        size = 0
        try:
            while chunk:
                for h in hashers.values():
                    h.update(chunk)
                size += len(chunk)
                number = len(parts) + 1
                with self._errors(f"UploadPart {number}", obj_key):
                    resp = self._client.upload_part(
                        Bucket=bucket,
                        Key=obj_key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                    )
                parts.append({"PartNumber": number, "ETag": resp["ETag"]})
                chunk = b""  # release the sent part before reading the next one
                with self._errors("read of the upload stream for", obj_key):
                    chunk = _read_chunk(stream, CHUNK)
            if expected_sha256 and expected_sha256 != hashers["sha256"].hexdigest():
                raise StorageError(f"upload stream for {self._where(obj_key)} changed while read")
            extra = {"IfNoneMatch": "*"} if create_only else {}
            with self._errors("CompleteMultipartUpload", obj_key):
                resp = self._client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=obj_key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    **extra,
                )
        except BaseException:
            with contextlib.suppress(ClientError, BotoCoreError, OSError):
                self._client.abort_multipart_upload(Bucket=bucket, Key=obj_key, UploadId=upload_id)
            raise
        return str(resp["ETag"]), size

    def copy(self, src: str, dst: str) -> str:
        """One CopyObject: the bytes stay in the bucket; metadata (the stored sha256)
        and content type are copied with them."""
        src_key, obj_key = self._key(src), self._key(dst)
        with self._errors("CopyObject", obj_key):
            try:
                resp = self._client.copy_object(
                    Bucket=self.bucket,
                    Key=obj_key,
                    CopySource={"Bucket": self.bucket, "Key": src_key},
                    **self._write_args,
                )
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in ("NoSuchKey", "404", "NotFound"):
                    raise NotFound(f"{self._where(src_key)} not found") from exc
                raise
        return str(resp["CopyObjectResult"]["ETag"])

    def delete(self, key: str) -> None:
        obj_key = self._key(key)
        with self._errors("DeleteObject", obj_key):
            self._client.delete_object(Bucket=self.bucket, Key=obj_key)
