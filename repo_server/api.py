"""The JSON API under ``/api/v1`` (see docs/server.md for the reference).

Every view checks its token first, then calls one :class:`Repository` operation and
returns its JSON-ready result, so the API and the local CLI give the same answers.
Listings only show channels the token can read.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from flask import Blueprint, Response, jsonify, request
from werkzeug.formparser import parse_form_data
from werkzeug.http import parse_options_header

from publisher.errors import NotFound, TooLarge, UsageError
from repo_server.app import server_state
from repo_server.auth import current_token, readable_channels, require

bp = Blueprint("api", __name__)
CHUNK = 1024 * 1024
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the .deb
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._+~%-]")
T = TypeVar("T")


# -- request helpers ----------------------------------------------------------------
def json_body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise UsageError("send a JSON object as the body (Content-Type: application/json)")
    return data


def field(body: dict[str, Any], name: str, kind: type[T], default: T | None = None) -> T | None:
    """``body[name]`` checked against ``kind``; ``default`` when absent or null."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is str and not value):
        raise UsageError(f"field {name!r} must be a non-empty {kind.__name__}")
    return value


def required(body: dict[str, Any], name: str) -> str:
    value = field(body, name, str)
    if value is None:
        raise UsageError(f"field {name!r} is required")
    return value


def flag(name: str) -> bool:
    return request.args.get(name, "").lower() in ("1", "true", "yes")


# -- uploads --------------------------------------------------------------------------
class CappedFile(io.FileIO):
    """A new file that refuses to grow past ``limit`` bytes (TooLarge)."""

    def __init__(self, path: Path, limit: int) -> None:
        super().__init__(path, "xb")
        self.path = path
        self.limit = limit
        self.written = 0

    def write(self, data: Any) -> int:
        self.written += len(data)
        if self.written > self.limit:
            raise too_large(self.limit)
        return super().write(data)


def too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"upload is larger than this server accepts ({limit} bytes, server.max_upload_bytes)"
    )


def upload_name(raw: str | None) -> str:
    """The client's file name, reduced to a safe base name (kept for error messages)."""
    name = _UNSAFE_NAME.sub("_", (raw or "").replace("\\", "/").rsplit("/", 1)[-1])
    return name.lstrip(".") or "upload.deb"


@contextlib.contextmanager
def received_upload(limit: int, upload_dir: Path | None) -> Iterator[Path]:
    """Stream the request's .deb (raw body or multipart field ``file``) to a temp file.

    The file lives in a fresh directory under ``upload_dir`` (or the system temp
    directory) that is always removed afterwards, whatever happens.
    """
    multipart = request.mimetype == "multipart/form-data"
    announced = request.content_length
    if announced is not None and announced > limit + (MULTIPART_SLACK if multipart else 0):
        raise too_large(limit)
    workdir = Path(tempfile.mkdtemp(prefix="aptship-upload-", dir=upload_dir))
    opened: list[CappedFile] = []

    def open_file(filename: str | None) -> CappedFile:
        part = workdir / str(len(opened))
        part.mkdir()
        fh = CappedFile(part / upload_name(filename), limit)
        opened.append(fh)
        return fh

    try:
        if multipart:
            yield _receive_multipart(open_file)
        else:
            disposition = parse_options_header(request.headers.get("Content-Disposition"))[1]
            with open_file(disposition.get("filename")) as fh:
                while chunk := request.stream.read(CHUNK):
                    fh.write(chunk)
            yield fh.path
    finally:
        for fh in opened:
            fh.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _receive_multipart(open_file: Callable[[str | None], CappedFile]) -> Path:
    def factory(
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        return open_file(filename)

    try:
        _stream, _form, files = parse_form_data(
            request.environ,
            stream_factory=factory,
            max_form_memory_size=64 * 1024,
            max_form_parts=16,
            silent=False,
        )
    except ValueError as exc:
        raise UsageError(f"malformed multipart body: {exc}") from None
    uploads = files.getlist("file")
    if len(uploads) != 1 or not isinstance(uploads[0].stream, CappedFile):
        raise UsageError("send exactly one .deb in the multipart field 'file'")
    uploads[0].stream.close()
    return uploads[0].stream.path


# -- views ----------------------------------------------------------------------------
@bp.get("/channels")
def channels() -> Response:
    state = server_state()
    return jsonify(
        [
            {
                "name": name,
                "description": state.config.channels[name].description,
                "architectures": list(state.config.channels[name].architectures),
                "promote_from": list(state.config.channels[name].promote_from),
                "generation": state.repo.generation(name),
            }
            for name in readable_channels(current_token())
        ]
    )


@bp.get("/channels/<channel>")
def channel_summary(channel: str) -> Response:
    require("read", channel)
    return jsonify(server_state().repo.channel_summary(channel))


@bp.get("/channels/<channel>/packages")
def channel_entries(channel: str) -> Response:
    require("read", channel)
    return jsonify(server_state().repo.list_entries(channel))


@bp.get("/channels/<channel>/packages/<package>")
def package_detail(channel: str, package: str) -> Response:
    require("read", channel)
    server_state().config.channel(channel)
    missing = NotFound(f"package {package!r} is not in channel {channel!r}")
    try:
        found = server_state().repo.show(package)["channels"].get(channel)
    except NotFound:
        raise missing from None
    if found is None:
        raise missing
    return jsonify({"package": package, "channel": channel, **found})


@bp.get("/channels/<channel>/diff")
def diff(channel: str) -> Response:
    """What ``promote --all`` from ``?from=`` into this channel would change."""
    src = request.args.get("from")
    if not src:
        raise UsageError("give the source channel as ?from=CHANNEL")
    require("read", src)
    require("read", channel)
    return jsonify(server_state().repo.diff(src, channel))


@bp.post("/channels/<channel>/packages")
def publish(channel: str) -> tuple[Response, int]:
    require("publish", channel)
    state = server_state()
    state.config.channel(channel)
    server = state.config.server
    with received_upload(server.max_upload_bytes, server.upload_dir) as path:
        result = state.repo.publish(channel, [path])[0]
    state.metrics.publishes.labels(channel, result["status"]).inc()
    return jsonify(result), 201 if result["status"] == "added" else 200


@bp.post("/channels/<channel>/promote")
def promote(channel: str) -> Response:
    """One package (``package``, optional ``version``) or ``all`` pins of ``from``."""
    require("promote", channel)
    body = json_body()
    state = server_state()
    src = required(body, "from")
    dry_run = bool(field(body, "dry_run", bool, False))
    if field(body, "all", bool, False):
        if "package" in body or "version" in body:
            raise UsageError("give either 'all': true or a 'package', not both")
        results = state.repo.promote_all(src, channel, dry_run=dry_run)
        answer: Any = results
    else:
        package, version = required(body, "package"), field(body, "version", str)
        answer = state.repo.promote(package, version, src, channel, dry_run=dry_run)
        results = [answer]
    for r in results:
        state.metrics.promotions.labels(channel, "promote", r["status"]).inc()
    return jsonify(answer)


@bp.post("/channels/<channel>/rollback")
def rollback(channel: str) -> Response:
    require("promote", channel)
    body = json_body()
    state = server_state()
    result = state.repo.rollback(required(body, "package"), channel, to=field(body, "to", str))
    state.metrics.promotions.labels(channel, "rollback", "done").inc()
    return jsonify(result)


@bp.delete("/channels/<channel>/packages/<package>/<version>")
def remove(channel: str, package: str, version: str) -> Response:
    require("admin", channel)
    return jsonify(server_state().repo.remove(package, version, channel, force=flag("force")))


@bp.get("/history")
def history() -> Response:
    token = current_token()
    channel = request.args.get("channel") or None
    if channel is not None:
        require("read", channel)
    rows = server_state().repo.history(channel, request.args.get("package") or None)
    readable = set(readable_channels(token))
    return jsonify([row for row in rows if row.get("channel") in readable])
