"""The dashboard's rollout column and ``aptship_hosts`` in /metrics (Flask's test client)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from flask.testing import FlaskClient

from publisher.fleet_store import FleetStore
from publisher.host_report import Report
from tests.conftest import tokens_of
from tests.ui import ReleaseEnv, sign_in


class _Rollout(HTMLParser):
    """package -> text of its ``<td class="rollout">``."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, str] = {}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "td" and a.get("class") == "rollout":
            self._open = a.get("data-package") or ""
            self.cells[self._open] = ""
        elif tag == "div" and self._open is not None:
            self.cells[self._open] += "|"

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.cells[self._open] += data.strip()


def rollout_column(html: str) -> dict[str, str]:
    parser = _Rollout()
    parser.feed(html)
    return parser.cells


def report_hosts(release: ReleaseEnv) -> None:
    repo = release.repo()
    store = FleetStore(repo.storage, repo.config.fleet)
    store.report("prod", "p1", "host", Report("<b>p1</b>", {"hello": "1.0-1", "tool": "1.0-1"}))
    store.report("prod", "p2", "host", Report("p2", {"hello": "0.9-1"}))
    store.report("staging", "s1", "host", Report("s1", {"hello": "2.0-1"}))


def test_overview_shows_the_rollout_per_channel(client: FlaskClient, release: ReleaseEnv) -> None:
    report_hosts(release)
    sign_in(client, release.secrets["reader"])
    page = client.get("/ui/").text
    assert rollout_column(page) == {
        "hello": "|staging: 0/1 hosts on 1.0-1; 1 behind|prod: 1/2 hosts on 1.0-1; 1 behind",
        "tool": "|prod: 1/1 hosts on 1.0-1; 0 behind",
        "world": "\u2013",  # the empty-cell dash
    }
    assert "<b>p1</b>" not in page  # host names are not rendered on the overview


def test_no_column_without_readable_hosts(client: FlaskClient, release: ReleaseEnv) -> None:
    sign_in(client, release.secrets["reader"])
    assert "Rollout" not in client.get("/ui/").text  # no host reports at all


def test_rollout_shows_only_readable_channels(client: FlaskClient, release: ReleaseEnv) -> None:
    report_hosts(release)
    sign_in(client, release.secrets["devview"])
    assert "Rollout" not in client.get("/ui/").text  # dev has no hosts; prod is not readable


def test_hosts_gauge(client: FlaskClient, release: ReleaseEnv) -> None:
    report_hosts(release)
    headers = {"Authorization": f"Bearer {release.secrets['reader']}"}
    assert client.get("/metrics", headers=headers).status_code == 403  # admin only
    admin = tokens_of(release.config_path).create("ops", "admin", ["*"])
    text = client.get("/metrics", headers={"Authorization": f"Bearer {admin}"}).text
    gauge = dict(re.findall(r"^(aptship_hosts\{[^}]*\}) (\S+)$", text, re.M))
    assert gauge == {
        f'aptship_hosts{{channel="{ch}",state="{st}"}}': str(float(n))
        for ch, counts in {
            "dev": (0, 0, 0),
            "staging": (0, 1, 0),
            "prod": (1, 1, 0),
        }.items()
        for st, n in zip(("converged", "behind", "stale"), counts, strict=True)
    }
    assert "# TYPE aptship_hosts gauge" in text
