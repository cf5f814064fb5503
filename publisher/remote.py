"""Remote mode: the :class:`Repository` operations the CLI uses, over the JSON API.

:class:`RemoteRepository` sends each operation to an aptship server with a Bearer
token and returns the server's JSON, which is what the local :class:`Repository`
returns, so ``aptship --server URL ...`` prints the same output.  An error answer
``{"error": {"code", "message"}}`` is raised again as the :class:`AptshipError`
subclass with that code, so messages and exit codes match local mode too.  A server
that cannot be reached is a :class:`StorageError` naming the URL.

Uploads stream from the file (requests sends a file object in blocks, with its
Content-Length); the whole .deb is never read into memory.  Every file is checked
with :func:`inspect_deb` before the first upload, so an invalid file in a batch is
refused, with the local message, before anything is published.  After that each
file is one request: an error on a later file (e.g. an immutable conflict) leaves
the earlier ones published, unlike a local batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import requests

from publisher.errors import (
    AptshipError,
    Forbidden,
    InvalidPackage,
    NotFound,
    StorageError,
    TooLarge,
    Unauthorized,
    UsageError,
)
from publisher.results import EntryRow, PromoteRow, PublishRow, RemoveRow, RollbackRow

API_PREFIX = "/api/v1"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 300.0
TOKEN_ENV = "APTSHIP_TOKEN"  # noqa: S105 - the name of a variable, not a secret
_BY_STATUS: dict[int, type[AptshipError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    413: TooLarge,
}


def error_classes() -> dict[str, type[AptshipError]]:
    """Every error code in the tree -> its class (a parent wins a shared code)."""
    found: dict[str, type[AptshipError]] = {}
    queue: list[type[AptshipError]] = [AptshipError]
    while queue:
        cls = queue.pop(0)
        found.setdefault(cls.code, cls)
        queue.extend(cls.__subclasses__())
    return found


def error_from_response(resp: requests.Response, server: str) -> AptshipError:
    """The AptshipError an error response stands for."""
    try:
        body = resp.json()
        code, message = body["error"]["code"], body["error"]["message"]
    except (ValueError, KeyError, TypeError):
        cls = _BY_STATUS.get(resp.status_code, StorageError)
        return cls(f"aptship server {server} answered HTTP {resp.status_code}: {resp.reason}")
    return error_classes().get(str(code), AptshipError)(str(message))


def _q(segment: str) -> str:
    return quote(segment, safe="")


class RemoteRepository:
    """The CLI's view of a repository, served by ``url`` and reached with ``token``."""

    def __init__(self, url: str, token: str, *, session: requests.Session | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"server URL {url!r} must start with http:// or https://")
        if not token:
            raise Unauthorized(f"no token for {url}: set ${TOKEN_ENV}")
        self.url = url.rstrip("/")
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    # -- transport ----------------------------------------------------------------
    def _request(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", (CONNECT_TIMEOUT, READ_TIMEOUT))
        try:
            resp = self.session.request(method, f"{self.url}{API_PREFIX}{path}", **kw)
        except requests.RequestException as exc:
            raise StorageError(
                f"cannot reach the aptship server at {self.url} ({type(exc).__name__})"
            ) from None
        if resp.status_code >= 400:
            raise error_from_response(resp, self.url)
        return resp

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._request(method, path, **kw)
        try:
            return resp.json()
        except ValueError:
            raise StorageError(
                f"aptship server {self.url} sent a response that is not JSON for {path}"
            ) from None

    # -- operations ------------------------------------------------------------------
    def channels(self) -> list[dict[str, Any]]:
        """The channels this token can read."""
        result: list[dict[str, Any]] = self._json("GET", "/channels")
        return result

    def publish(
        self,
        channel: str,
        paths: Sequence[str | os.PathLike[str]],
        *,
        progress: Callable[[int], None] | None = None,
        dist: str | None = None,
    ) -> list[PublishRow]:
        from publisher.debfile import inspect_deb

        if not paths:
            raise InvalidPackage("no .deb files given")
        files = [Path(p) for p in paths]
        for path in files:
            inspect_deb(path)
        results: list[PublishRow] = []
        for path in files:
            with path.open("rb") as fh:
                results.append(
                    self._json(
                        "POST",
                        f"/channels/{_q(channel)}/packages",
                        params={"dist": dist} if dist else None,
                        data=fh,
                        headers={
                            "Content-Type": "application/vnd.debian.binary-package",
                            "Content-Disposition": f"attachment; filename*=UTF-8''{_q(path.name)}",
                        },
                    )
                )
            if progress:
                progress(1)
        return results

    def publish_all(
        self,
        channel: str,
        paths: Sequence[str | os.PathLike[str]],
        *,
        progress: Callable[[int], None] | None = None,
        dist: str | None = None,
    ) -> list[PublishRow]:
        """Remotely the same as :meth:`publish`: one upload per file, each its own commit
        on the server (whose API bounds a request, not a batch)."""
        return self.publish(channel, paths, progress=progress, dist=dist)

    def promote(
        self,
        package: str,
        version: str | None,
        src: str,
        dst: str,
        *,
        dry_run: bool = False,
        with_deps: bool = False,
        allow_partial: bool = False,
    ) -> PromoteRow:
        body = {
            "package": package,
            "version": version,
            "from": src,
            "dry_run": dry_run,
            "with_deps": with_deps,
        }
        if allow_partial:
            body["allow_partial"] = True
        result: PromoteRow = self._json("POST", f"/channels/{_q(dst)}/promote", json=body)
        return result

    def promote_all(
        self, src: str, dst: str, *, dry_run: bool = False, with_deps: bool = False
    ) -> list[PromoteRow]:
        body = {"all": True, "from": src, "dry_run": dry_run, "with_deps": with_deps}
        result: list[PromoteRow] = self._json("POST", f"/channels/{_q(dst)}/promote", json=body)
        return result

    def rollback(
        self, package: str, channel: str, to: str | None = None, *, allow_partial: bool = False
    ) -> RollbackRow:
        body: dict[str, Any] = {"package": package, "to": to}
        if allow_partial:
            body["allow_partial"] = True
        result: RollbackRow = self._json("POST", f"/channels/{_q(channel)}/rollback", json=body)
        return result

    def remove(self, package: str, version: str, channel: str, *, force: bool = False) -> RemoveRow:
        path = f"/channels/{_q(channel)}/packages/{_q(package)}/{_q(version)}"
        result: RemoveRow = self._json("DELETE", path, params={"force": "1"} if force else None)
        return result

    def list_entries(self, channel: str | None = None) -> list[EntryRow]:
        names = [channel] if channel else [c["name"] for c in self.channels()]
        rows: list[EntryRow] = []
        for name in names:
            rows += self._json("GET", f"/channels/{_q(name)}/packages")
        return rows

    def show(self, package: str) -> dict[str, Any]:
        channels: dict[str, Any] = {}
        for ch in self.channels():
            try:
                found = self._json("GET", f"/channels/{_q(ch['name'])}/packages/{_q(package)}")
            except NotFound:
                continue
            channels[ch["name"]] = {
                k: v for k, v in found.items() if k not in ("package", "channel")
            }
        if not channels:
            raise NotFound(f"package {package!r} is in no channel")
        return {"package": package, "channels": channels}

    def channel_summary(self, channel: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/channels/{_q(channel)}")
        return result

    def diff(self, src: str, dst: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json(
            "GET", f"/channels/{_q(dst)}/diff", params={"from": src}
        )
        return result

    def pins(self, channel: str) -> str:
        return self._request("GET", f"/channels/{_q(channel)}/preferences").text

    def history(
        self, channel: str | None = None, package: str | None = None
    ) -> list[dict[str, Any]]:
        """Every page of ``/history`` (newest first, see docs/server.md), oldest first as
        the local CLI prints it."""
        params = {k: v for k, v in (("channel", channel), ("package", package)) if v}
        rows: list[dict[str, Any]] = []
        while True:
            resp = self._request("GET", "/history", params=params)
            rows.extend(resp.json())
            following = resp.links.get("next")
            if following is None:
                return list(reversed(rows))
            params = dict(parse_qsl(urlsplit(following["url"]).query))

    def fleet(self, channel: str, package: str | None = None) -> dict[str, Any]:
        """The fleet view of ``channel`` (docs/hosts.md, "Fleet view")."""
        params = {"package": package} if package else None
        result: dict[str, Any] = self._json("GET", f"/channels/{_q(channel)}/hosts", params=params)
        return result

    # -- token administration (an admin token on '*') --------------------------------
    def create_token(
        self, name: str, role: str, channels: Sequence[str], packages: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Create a token on the server; the answer carries its secret (``"token"``)."""
        body = {"name": name, "role": role, "channels": list(channels), "packages": list(packages)}
        result: dict[str, Any] = self._json("POST", "/tokens", json=body)
        return result

    def list_tokens(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/tokens")
        return result

    def revoke_token(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("DELETE", f"/tokens/{_q(name)}")
        return result
