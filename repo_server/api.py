"""The JSON API under ``/api/v1`` (see docs/server.md for the reference).

Every view checks its token first, then calls one :class:`Repository` operation and
returns its JSON-ready result, so the API and the local CLI give the same answers.
Listings only show channels the token can read.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlencode

from flask import Blueprint, Response, jsonify, request
from werkzeug.formparser import parse_form_data
from werkzeug.http import parse_options_header

from publisher.audit import read_events_page
from publisher.debfile import inspect_deb
from publisher.errors import JsonTooDeep, NotFound, TooLarge, UsageError
from repo_server.auth import current_token, readable_channels, require, require_package
from repo_server.state import server_state

bp = Blueprint("api", __name__)
CHUNK = 1024 * 1024
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the .deb
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._+~%-]")
MAX_NAME = 128  # characters kept of a client's upload file name
HISTORY_PAGE = 100  # default rows per /history page
T = TypeVar("T")


# -- request helpers ----------------------------------------------------------------
def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (iterative: no recursion limit to hit)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            todo.extend((child, depth + 1) for child in children)
    return deepest


def json_body() -> dict[str, Any]:
    """The request's JSON object, bounded in size (413) and depth (``json_too_deep``)."""
    if not request.is_json:
        raise UsageError("send a JSON object as the body (Content-Type: application/json)")
    raw = request.get_data(cache=False)  # at most limits.max_body_bytes, else 413
    limit = server_state().config.limits.max_json_depth
    too_deep = JsonTooDeep(f"the JSON body is nested deeper than {limit} (limits.max_json_depth)")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise too_deep from None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise UsageError("send a JSON object as the body (Content-Type: application/json)")
    if json_depth(data) > limit:
        raise too_deep
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


def partial_flag(body: dict[str, Any]) -> dict[str, bool]:
    """``allow_partial`` of a release operation (channels with distributions), when set."""
    return {"allow_partial": True} if field(body, "allow_partial", bool, False) else {}


def flag(name: str) -> bool:
    return request.args.get(name, "").lower() in ("1", "true", "yes")


# -- uploads --------------------------------------------------------------------------
class Budget:
    """Bytes left for the whole request's files (every multipart part counts)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.written = 0

    def spend(self, size: int) -> None:
        self.written += size
        if self.written > self.limit:
            raise too_large(self.limit)


class CappedFile(io.FileIO):
    """A new file whose writes are charged to the request's :class:`Budget` (TooLarge)."""

    def __init__(self, path: Path, budget: Budget) -> None:
        super().__init__(path, "xb")
        self.path = path
        self.budget = budget

    def write(self, data: Any) -> int:
        self.budget.spend(len(data))
        return super().write(data)


def too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"upload is larger than this server accepts ({limit} bytes, server.max_upload_bytes)"
    )


def upload_name(raw: str | None) -> str:
    """The client's file name, reduced to a safe base name (kept for error messages)."""
    name = _UNSAFE_NAME.sub("_", (raw or "").replace("\\", "/").rsplit("/", 1)[-1])
    name = name.lstrip(".")
    if len(name) > MAX_NAME:  # file systems allow 255 bytes; keep the end (".deb")
        name = name[-MAX_NAME:].lstrip(".")
    return name or "upload.deb"


@contextlib.contextmanager
def received_upload(limit: int, upload_dir: Path | None) -> Iterator[Path]:
    """Stream the request's .deb (raw body or multipart field ``file``) to a temp file.

    The file lives in a fresh directory under ``upload_dir`` (or the system temp
    directory) that is always removed afterwards, whatever happens.
    """
    multipart = request.mimetype == "multipart/form-data"
    announced = request.content_length
    body_limit = limit + (MULTIPART_SLACK if multipart else 0)
    if announced is not None and announced > body_limit:
        raise too_large(limit)
    request.max_content_length = body_limit  # also bounds a chunked body
    budget = Budget(limit)
    workdir = Path(tempfile.mkdtemp(prefix="aptship-upload-", dir=upload_dir))
    opened: list[CappedFile] = []

    def open_file(filename: str | None) -> CappedFile:
        if opened:
            raise UsageError("send exactly one .deb in the multipart field 'file'")
        part = workdir / str(len(opened))
        part.mkdir()
        fh = CappedFile(part / upload_name(filename), budget)
        opened.append(fh)
        return fh

    try:
        if multipart:
            yield _receive_multipart(open_file, body_limit)
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


def _receive_multipart(open_file: Callable[[str | None], CappedFile], body_limit: int) -> Path:
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
            max_content_length=body_limit,
            max_form_parts=server_state().config.limits.max_form_parts,
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
    token = require("publish", channel)
    state = server_state()
    state.config.suites(channel)  # a channel with distributions: each .deb to its suite
    server = state.config.server
    with received_upload(server.max_upload_bytes, server.upload_dir) as path:
        if token.packages:
            require_package(token, inspect_deb(path, state.config.limits).package)
        result = state.repo.publish(channel, [path], dist=request.args.get("dist"))[0]
    state.metrics.publishes.labels(channel, result["status"]).inc()
    return jsonify(result), 201 if result["status"] == "added" else 200


@bp.post("/channels/<channel>/promote")
def promote(channel: str) -> Response:
    """One package (``package``, optional ``version``) or ``all`` pins of ``from``.

    A dry run needs ``read`` on ``from`` too (as ``/diff`` does): it shows the
    source's pins without changing anything the token can read.  A real promote
    needs only ``promote`` on the target: what it moves becomes readable there.
    """
    token = require("promote", channel)
    body = json_body()
    state = server_state()
    src = required(body, "from")
    dry_run = bool(field(body, "dry_run", bool, False))
    with_deps = bool(field(body, "with_deps", bool, False))
    if dry_run:
        require("read", src)
    if field(body, "all", bool, False):
        if "package" in body or "version" in body:
            raise UsageError("give either 'all': true or a 'package', not both")
        if token.packages:
            require_package(token, "*")  # a scoped token promotes its packages one by one
        results = state.repo.promote_all(src, channel, dry_run=dry_run, with_deps=with_deps)
        answer: Any = results
    else:
        package, version = required(body, "package"), field(body, "version", str)
        require_package(token, package)
        answer = state.repo.promote(
            package,
            version,
            src,
            channel,
            dry_run=dry_run,
            with_deps=with_deps,
            authorize=lambda name: require_package(token, name),
            **partial_flag(body),
        )
        results = [answer, *answer.get("dependencies", [])]
    for r in results:
        state.metrics.promotions.labels(channel, "promote", r["status"]).inc()
    return jsonify(answer)


@bp.post("/channels/<channel>/rollback")
def rollback(channel: str) -> Response:
    token = require("promote", channel)
    body = json_body()
    state = server_state()
    package = required(body, "package")
    require_package(token, package)
    result = state.repo.rollback(package, channel, to=field(body, "to", str), **partial_flag(body))
    state.metrics.promotions.labels(channel, "rollback", "done").inc()
    return jsonify(result)


@bp.delete("/channels/<channel>/packages/<package>/<version>")
def remove(channel: str, package: str, version: str) -> Response:
    require_package(require("admin", channel), package)
    return jsonify(server_state().repo.remove(package, version, channel, force=flag("force")))


@bp.get("/history")
def history() -> Response:
    """Audit rows newest first, one page at a time (``?limit=``, ``?before=<cursor>``).

    A ``Link: <...>; rel="next"`` header carries the cursor of the next (older) page.
    """
    token = current_token()
    state = server_state()
    channel = request.args.get("channel") or None
    wanted: set[str] = set()
    if channel is not None:
        require("read", channel)
        wanted = {s.name for s in state.config.suites(channel)}  # with distributions: each
    page_max = state.config.limits.history_page_max
    try:
        limit = int(request.args.get("limit", min(HISTORY_PAGE, page_max)))
    except ValueError:
        raise UsageError("?limit= must be a number") from None
    if not 1 <= limit <= page_max:
        raise UsageError(f"?limit= must be between 1 and {page_max} (limits.history_page_max)")
    rows, cursor = read_events_page(
        state.repo.storage,
        channels=set(readable_channels(token)) if channel is None else wanted,
        package=request.args.get("package") or None,
        limit=limit,
        before=request.args.get("before") or None,
        scan_max=state.config.limits.history_scan_max,
    )
    response = jsonify(rows)
    if cursor is not None:
        args = request.args.to_dict() | {"before": cursor}
        response.headers["Link"] = f'<{request.base_url}?{urlencode(args)}>; rel="next"'
    return response
