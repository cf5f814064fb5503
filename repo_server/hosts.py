"""Host setup: a channel's apt preferences and a one-shot setup script (docs/hosts.md).

``GET /api/v1/channels/<ch>/setup`` returns an idempotent POSIX ``sh`` script
(``host_script.sh`` beside this module, with the channel, URL, key and token filled
in).  It puts the host on the channel so that plain ``apt-get update`` fetches the
channel's pins as a signed index (``dists/<ch>/main/pins``, an apt index target)
and a ``preferences.d`` link makes them effective; it also installs the fleet
reporter (a ``DPkg::Post-Invoke`` hook) and, with ``APTSHIP_FOLLOW=1``, the
converge agent.  ``sh setup --remove`` takes the host off the channel again.

Only a ``read`` token is ever written onto a host: the script is refused to any
other token.  Every value put into the script is checked against a strict pattern
first, so a crafted ``Host`` header cannot inject shell code.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from urllib.parse import urlsplit

from flask import Blueprint, Response, request

from publisher.config import ChannelConfig
from publisher.errors import Forbidden, UsageError
from publisher.pins import PINS_PATH
from repo_server.auth import current_token, request_secret, require
from repo_server.state import server_state

bp = Blueprint("hosts", __name__)
HEREDOC_END = "@END@"
_SAFE_URL = re.compile(r"^https?://[A-Za-z0-9.\-]+(:[0-9]+)?(/[A-Za-z0-9._~\-/]*)?$")
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")
_SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")
# apt's URItoFileName quotes these (and controls, space, '%', non-ASCII) as %xx
_APT_QUOTED = set('\\|{}[]<>"^~_=!@#$%&*')


@cache
def script_template() -> str:
    return resources.files("repo_server").joinpath("host_script.sh").read_text()


def apt_list_name(url: str) -> str:
    """The file name apt gives ``url`` in its lists directory (apt's URItoFileName)."""
    parts = urlsplit(url)
    where = parts.netloc.rsplit("@", 1)[-1] + parts.path
    quoted = "".join(
        f"%{ord(c):02x}" if c in _APT_QUOTED or not " " < c < "\x7f" else c for c in where
    )
    return quoted.replace("/", "_")


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


def select_suite(url: str, channel: str, suites: list[ChannelConfig]) -> str:
    """Shell that picks the suite of the host's codename (``VERSION_CODENAME`` in the
    root's os-release) for a channel with distributions; refuses, writing nothing, a
    codename the channel does not carry.  Empty for a plain channel or suite."""
    if len(suites) == 1 and suites[0].group is None:
        return ""
    if any(not _SAFE_NAME.match(s.name) for s in suites):  # config names: cannot happen
        raise UsageError(f"cannot write a setup script for channel {channel!r}")
    cases = "".join(
        f"    {s.distribution}) channel='{s.name}'; "
        f"pins_list='{apt_list_name(f'{url}/dists/{s.name}/{PINS_PATH}')}' ;;\n"
        for s in suites
    )
    carried = ", ".join(s.distribution or "" for s in suites)
    return (
        "# This channel exists per distribution: the suite of this host's codename.\n"
        'osr="$root/etc/os-release"\n'
        '[ -r "$osr" ] || osr="$root/usr/lib/os-release"\n'
        'codename=$(sed -n "s/^VERSION_CODENAME=[\\"\']\\{0,1\\}\\([a-z0-9]*\\)'
        '[\\"\']\\{0,1\\}[[:space:]]*$/\\1/p" "$osr" 2>/dev/null | head -n 1)\n'
        'case "$codename" in\n'
        f"{cases}"
        f"    *) echo \"aptship: this host runs '${{codename:-no VERSION_CODENAME in $osr}}'; "
        f'channel {channel} of $url carries {carried} only; nothing was changed" >&2\n'
        "        exit 3 ;;\n"
        "esac\n"
    )


@bp.get("/channels/<channel>/preferences")
def preferences(channel: str) -> Response:
    require("read", channel)
    return Response(server_state().repo.pins(channel), mimetype="text/plain")


@bp.get("/channels/<channel>/setup")
def setup(channel: str) -> Response:
    require("read", channel)
    if current_token().role != "read":
        raise Forbidden(
            "the setup script writes its token onto the host: use a token with the read "
            f"role for channel {channel!r} (aptship token create --role read --channel "
            f"{channel}), never a publish, promote or admin token"
        )
    suites = server_state().config.suites(channel)  # NotFound for a channel the config lacks
    for suite in suites:
        require("read", suite.name)
    repo = server_state().repo
    token = request_secret()
    if not _SAFE_TOKEN.match(token):
        raise UsageError("this token cannot be written into a setup script; create a new one")
    url = base_url()
    values = {
        "@CHANNEL@": channel,
        "@URL@": url,
        "@MACHINE@": auth_machine(url),
        "@TOKEN@": token,
        "@PINS_LIST@": apt_list_name(f"{url}/dists/{channel}/{PINS_PATH}"),
        "@SELECT_SUITE@": select_suite(url, channel, suites),
        "@KEY@": embeddable(repo.signer.export_public().decode("ascii")),
    }
    script = re.sub(r"@[A-Z_]+@", lambda m: values.get(m.group(0), m.group(0)), script_template())
    response = Response(script, mimetype="text/x-shellscript")
    response.cache_control.no_store = True
    return response
