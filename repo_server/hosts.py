"""Host setup: a channel's apt preferences and a one-shot setup script (GUIDE §5).

``GET /api/v1/channels/<ch>/setup`` returns an idempotent POSIX ``sh`` script that
writes, each atomically (temp file + ``mv``):

* ``/etc/apt/keyrings/aptship.asc``: the repository's public key (embedded);
* ``/etc/apt/sources.list.d/aptship-<ch>.list``: ``deb [signed-by=...] URL <ch> main``;
* ``/etc/apt/auth.conf.d/aptship.conf`` (mode 600): ``machine ... login token
  password <the token that fetched the script>``;
* ``/etc/apt/preferences.d/aptship-<ch>.pref``: the channel's pins (embedded);
* ``/etc/apt/apt.conf.d/50aptship``: ``APT::Get::Allow-Downgrades "true"`` so that
  ``apt-get install -y`` follows a pin down after a rollback.

``$APTSHIP_ROOT`` (default empty) prefixes every path the script writes, including
the ``signed-by`` path, so a test or an image build can target another apt root.
Every value put into the script is checked against a strict pattern first, so a
crafted ``Host`` header cannot inject shell code.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import Blueprint, Response, request

from publisher.errors import UsageError
from repo_server.app import server_state
from repo_server.auth import request_secret, require

bp = Blueprint("hosts", __name__)
HEREDOC_END = "APTSHIP_END_OF_FILE"
_SAFE_URL = re.compile(r"^https?://[A-Za-z0-9.\-]+(:[0-9]+)?(/[A-Za-z0-9._~\-/]*)?$")
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")

SCRIPT = """\
#!/bin/sh
# aptship host setup: channel {channel} of {url}
# Safe to run again: every file is rewritten whole.  Run as root.
# APTSHIP_ROOT (default: empty) is prepended to every path written.
set -eu
root="${{APTSHIP_ROOT:-}}"
umask 022
mkdir -p "$root/etc/apt/keyrings" "$root/etc/apt/sources.list.d" \\
    "$root/etc/apt/auth.conf.d" "$root/etc/apt/preferences.d" "$root/etc/apt/apt.conf.d"

# put MODE FILE: write stdin to FILE with MODE, atomically.
put() {{
    tmp="$2.aptship-tmp.$$"
    (umask 077 && cat >"$tmp")
    chmod "$1" "$tmp"
    mv -f "$tmp" "$2"
}}

put 644 "$root/etc/apt/keyrings/aptship.asc" <<'{end}'
{key}{end}

printf 'deb [signed-by=%s/etc/apt/keyrings/aptship.asc] %s %s main\\n' \\
    "$root" '{url}' '{channel}' | put 644 "$root/etc/apt/sources.list.d/aptship-{channel}.list"

printf 'machine %s login token password %s\\n' '{machine}' '{token}' \\
    | put 600 "$root/etc/apt/auth.conf.d/aptship.conf"

put 644 "$root/etc/apt/preferences.d/aptship-{channel}.pref" <<'{end}'
{pins}{end}

# Pins at priority 1001 may point below what is installed (a rollback); let
# `apt-get install -y` follow them down without --allow-downgrades.
printf 'APT::Get::Allow-Downgrades "true";\n' | put 644 "$root/etc/apt/apt.conf.d/50aptship"

echo "aptship: configured channel {channel} of {url}; now run: apt-get update"
"""


def base_url() -> str:
    """The URL hosts use: ``server.public_url`` or the URL this request came to."""
    url = (server_state().config.server.public_url or request.url_root).rstrip("/")
    if not _SAFE_URL.match(url):
        raise UsageError(f"cannot write a setup script for the URL {url!r}; set server.public_url")
    return url


def auth_machine(url: str) -> str:
    """The auth.conf ``machine`` for ``url``: https needs no scheme, http must name it."""
    parts = urlsplit(url)
    where = parts.netloc + parts.path.rstrip("/")
    return where if parts.scheme == "https" else f"{parts.scheme}://{where}"


def embeddable(text: str) -> str:
    """``text`` as the body of a quoted here-document (ends with a newline)."""
    if any(line == HEREDOC_END for line in text.splitlines()):
        raise UsageError("refusing to embed text that contains the here-document marker")
    return text if not text or text.endswith("\n") else text + "\n"


@bp.get("/channels/<channel>/preferences")
def preferences(channel: str) -> Response:
    require("read", channel)
    return Response(server_state().repo.pins(channel), mimetype="text/plain")


@bp.get("/channels/<channel>/setup")
def setup(channel: str) -> Response:
    require("read", channel)
    repo = server_state().repo
    pins = repo.pins(channel)
    token = request_secret()
    if not _SAFE_TOKEN.match(token):
        raise UsageError("this token cannot be written into a setup script; create a new one")
    url = base_url()
    script = SCRIPT.format(
        channel=channel,
        url=url,
        machine=auth_machine(url),
        token=token,
        key=embeddable(repo.signer.export_public().decode("ascii")),
        pins=embeddable(pins),
        end=HEREDOC_END,
    )
    response = Response(script, mimetype="text/x-shellscript")
    response.cache_control.no_store = True
    return response
