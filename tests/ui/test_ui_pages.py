"""The dashboard through Flask's test client: sign-in, matrix, drift, actions, CSRF."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from publisher.session_secret import SESSION_SECRET_KEY
from repo_server import create_app
from repo_server.ui import UiSessionInterface
from tests.conftest import tokens_of
from tests.server.conftest import BufferedClient
from tests.ui import SESSION_VAR, ReleaseEnv, csrf_of, matrix, sign_in

# Moved to tests/ui/conftest.py and tests/ui/__init__.py; still importable from here for
# branches written before the move.
from tests.ui.conftest import app as app
from tests.ui.conftest import client as client
from tests.ui.conftest import release as release
from tests.ui.conftest import release_template as release_template


@pytest.fixture
def signed_in(client: FlaskClient, release: ReleaseEnv) -> Iterator[tuple[FlaskClient, str]]:
    yield client, sign_in(client, release.secrets["release"])


# -- sign-in ----------------------------------------------------------------------------
def test_pages_need_a_session(client: FlaskClient) -> None:
    for path in ("/ui/", "/ui/packages/hello", "/ui/history?channel=dev"):
        got = client.get(path)
        assert got.status_code == 303
        assert got.headers["Location"].startswith("/ui/login?next=")
    assert (
        client.get("/ui/history?channel=dev")
        .headers["Location"]
        .endswith("next=/ui/history?channel%3Ddev")
    )


def test_login_sets_a_strict_httponly_cookie_without_the_secret(
    client: FlaskClient, app: Flask, release: ReleaseEnv
) -> None:
    page = client.get("/ui/login?next=/ui/history")
    done = client.post(
        "/ui/login",
        data={"token": release.secrets["release"], "csrf_token": csrf_of(page.text),
              "next": "/ui/history"},
    )  # fmt: skip
    assert done.status_code == 303
    assert done.headers["Location"] == "/ui/history"
    cookie = done.headers["Set-Cookie"]
    assert cookie.startswith("aptship_session=")
    flags = [part.strip() for part in cookie.split(";")]
    assert "HttpOnly" in flags
    assert "SameSite=Strict" in flags
    assert "Path=/ui" in flags
    assert "Secure" not in flags  # plain HTTP
    raw = client.get_cookie("aptship_session", path="/ui")
    assert raw is not None
    serializer = UiSessionInterface().get_signing_serializer(app)
    data = serializer.loads(raw.value)
    name = data["token_name"]
    assert name == "release"
    assert re.fullmatch(r"[0-9a-f]{64}", data["token_sha256"])
    assert release.secrets["release"] not in str(data)
    assert release.secrets["release"] not in raw.value


def test_cookie_is_secure_over_https(app: Flask, release: ReleaseEnv) -> None:
    client = app.test_client()
    page = client.get("/ui/login", base_url="https://apt.example")
    assert "Secure" in page.headers["Set-Cookie"]
    done = client.post(
        "/ui/login",
        base_url="https://apt.example",
        data={"token": release.secrets["reader"], "csrf_token": csrf_of(page.text)},
    )
    assert done.status_code == 303
    assert "Secure" in [p.strip() for p in done.headers["Set-Cookie"].split(";")]


def test_wrong_token_is_refused(client: FlaskClient) -> None:
    page = client.get("/ui/login")
    bad = client.post("/ui/login", data={"token": "nope", "csrf_token": csrf_of(page.text)})
    assert bad.status_code == 401
    assert "Unknown or revoked token" in bad.text
    assert client.get("/ui/").status_code == 303


def test_login_without_csrf_is_refused(client: FlaskClient, release: ReleaseEnv) -> None:
    client.get("/ui/login")
    got = client.post("/ui/login", data={"token": release.secrets["release"]})
    assert got.status_code == 403
    assert client.get("/ui/").status_code == 303


def test_next_cannot_leave_the_dashboard(client: FlaskClient, release: ReleaseEnv) -> None:
    for target in ("https://evil.example/", "//evil.example/ui/", "/api/v1/channels", "/ui\\x"):
        client.delete_cookie("aptship_session", path="/ui")
        page = client.get("/ui/login")
        done = client.post(
            "/ui/login",
            data={"token": release.secrets["reader"], "csrf_token": csrf_of(page.text),
                  "next": target},
        )  # fmt: skip
        assert done.headers["Location"] == "/ui/", target


def test_logout_clears_the_session(signed_in: tuple[FlaskClient, str]) -> None:
    client, csrf = signed_in
    assert client.post("/ui/logout").status_code == 403  # CSRF-protected too
    assert client.get("/ui/").status_code == 200
    out = client.post("/ui/logout", data={"csrf_token": csrf})
    assert (out.status_code, out.headers["Location"]) == (303, "/ui/login")
    assert client.get("/ui/").status_code == 303
    # the old CSRF token died with the session: a POST without a session is sent to
    # the sign-in page before its form is read
    late = client.post("/ui/logout", data={"csrf_token": csrf})
    assert (late.status_code, late.headers["Location"]) == (303, "/ui/login")


def test_revoked_token_ends_the_session(
    signed_in: tuple[FlaskClient, str], release: ReleaseEnv
) -> None:
    client, _csrf = signed_in
    assert client.application.extensions["aptship"].tokens.revoke("release").name == "release"
    got = client.get("/ui/")
    assert got.status_code == 303
    assert "revoked" in client.get(got.headers["Location"]).text


def test_session_cookie_is_no_api_credential(signed_in: tuple[FlaskClient, str]) -> None:
    client, _csrf = signed_in
    cookie = client.get_cookie("aptship_session", path="/ui")
    assert cookie is not None
    headers = {"Cookie": f"aptship_session={cookie.value}"}
    for path in ("/api/v1/channels", "/dists/dev/InRelease", "/archive-keyring.asc"):
        assert client.get(path, headers=headers).status_code == 401, path


def test_without_a_configured_secret_the_storage_one_is_shared(
    release: ReleaseEnv, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(SESSION_VAR, raising=False)
    storage = release.repo().storage
    assert not storage.exists(SESSION_SECRET_KEY)
    with caplog.at_level(logging.WARNING, logger="aptship"):
        first, second = create_app(release.config_path), create_app(release.config_path)
    assert any("shared through storage" in r.getMessage() for r in caplog.records)
    stored = storage.read_bytes(SESSION_SECRET_KEY).decode().strip()
    assert len(stored) >= 32 and first.secret_key == second.secret_key == stored
    # A session made by one app (worker or replica) is valid on the other.
    for flask_app in (first, second):
        flask_app.testing = True
        flask_app.test_client_class = BufferedClient
    one, other = first.test_client(), second.test_client()
    sign_in(one, release.secrets["release"])
    cookie = one.get_cookie("aptship_session", path="/ui")
    assert cookie is not None
    other.set_cookie("aptship_session", cookie.value, path="/ui")
    assert other.get("/ui/").status_code == 200
    # The configured secret keeps precedence over the stored one.
    monkeypatch.setenv(SESSION_VAR, "x" * 40)
    assert create_app(release.config_path).secret_key == "x" * 40


def test_security_headers(signed_in: tuple[FlaskClient, str]) -> None:
    client, _csrf = signed_in
    got = client.get("/ui/")
    assert got.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in got.headers["Content-Security-Policy"]
    assert got.headers["Cache-Control"] == "no-store"


# -- overview ---------------------------------------------------------------------------
def test_matrix_shows_pins_counts_and_drift(signed_in: tuple[FlaskClient, str]) -> None:
    client, _csrf = signed_in
    page = client.get("/ui/")
    assert page.status_code == 200
    cells = matrix(page.text)
    assert {ch for _pkg, ch in cells} == {"dev", "staging", "prod"}
    expected = {
        ("hello", "dev"): ("2.0-1", 2, set()),
        ("hello", "staging"): ("1.0-1", 2, {"drift-behind", "drift-rollback"}),
        ("hello", "prod"): ("1.0-1", 1, set()),
        ("world", "dev"): ("2.0-1", 2, set()),
        ("world", "staging"): ("1.0-1", 1, {"drift-behind"}),
        ("world", "prod"): ("1.0-1", 1, set()),
        ("tool", "dev"): ("1.0-1", 1, set()),
        ("tool", "staging"): ("1.0-1", 1, set()),
        ("tool", "prod"): ("1.0-1", 1, set()),
    }
    assert set(cells) == set(expected)
    for key, (pin, count, drift) in expected.items():
        cell = cells[key]
        assert cell.text.startswith(f"{pin} {count} kept"), (key, cell.text)
        assert cell.classes - {"cell"} == drift, key
    # not colour only: a text marker says what the colour means
    assert 'aria-label="behind dev: 2.0-1 is newer"' in page.text
    assert 'aria-label="rolled back: newest retained is 2.0-1"' in page.text
    # promote buttons where the next channel differs, into channels the token may promote
    assert "Promote to staging" in cells["hello", "dev"].text
    assert "Promote to" not in cells["tool", "dev"].text
    assert "Promote to" not in cells["hello", "staging"].text  # prod already has 1.0-1


def test_filter_by_name(signed_in: tuple[FlaskClient, str]) -> None:
    client, _csrf = signed_in
    assert {pkg for pkg, _ch in matrix(client.get("/ui/?q=OR").text)} == {"world"}
    assert {pkg for pkg, _ch in matrix(client.get("/ui/?q=o").text)} == {"hello", "world", "tool"}
    empty = client.get("/ui/?q=zzz")
    assert matrix(empty.text) == {}
    assert "No package matches" in empty.text


def test_only_readable_channels(client: FlaskClient, release: ReleaseEnv) -> None:
    csrf = sign_in(client, release.secrets["devview"])
    cells = matrix(client.get("/ui/").text)
    assert {ch for _pkg, ch in cells} == {"dev"}
    assert not any(c.classes - {"cell"} for c in cells.values())
    package = client.get("/ui/packages/hello").text
    assert 'data-channel="dev"' in package
    assert 'data-channel="staging"' not in package
    history = client.get("/ui/history").text
    assert 'data-channel="dev"' in history
    assert 'data-channel="staging"' not in history
    assert client.get("/ui/history?channel=staging").status_code == 403
    main = client.get("/ui/").text.split("<main>")[1]
    assert "Promote to" not in main
    refused = client.post(
        "/ui/channels/staging/promote",
        data={"csrf_token": csrf, "package": "world", "version": "2.0-1", "from": "dev"},
    )
    assert refused.status_code == 403


# -- package page -----------------------------------------------------------------------
def test_package_page(signed_in: tuple[FlaskClient, str]) -> None:
    client, _csrf = signed_in
    page = client.get("/ui/packages/hello")
    assert page.status_code == 200
    text = page.text
    assert text.count("<svg") == 3  # one timeline per channel
    assert 'aria-label="pin timeline of hello in staging"' in text
    staging = text.split('id="channel-staging"')[1].split("</section>")[0]
    assert '<tr class="pinned" data-version="1.0-1">' in staging
    assert 'data-version="2.0-1"' in staging
    assert re.search(r'<td title="\d+ bytes">\d+ Bytes</td>', staging)
    assert "amd64" in staging
    assert "2.0-1 → 1.0-1" in staging  # the rollback in the pin history
    assert "rollback" in staging
    assert 'class="tl-point tl-rollback tl-current"' in staging
    # the dev pin can be rolled back to 1.0-1 and promoted to staging
    dev = text.split('id="channel-dev"')[1].split("</section>")[0]
    assert "Roll back to 1.0-1" in dev
    assert "Promote to staging" in dev
    assert "confirm(" in dev
    assert client.get("/ui/packages/nothere").status_code == 404


# -- actions ----------------------------------------------------------------------------
def test_promote_through_the_form(signed_in: tuple[FlaskClient, str], release: ReleaseEnv) -> None:
    client, csrf = signed_in
    done = client.post(
        "/ui/channels/staging/promote",
        data={"csrf_token": csrf, "package": "world", "version": "2.0-1", "from": "dev",
              "next": "/ui/?q=world"},
    )  # fmt: skip
    assert (done.status_code, done.headers["Location"]) == (303, "/ui/?q=world")
    page = client.get(done.headers["Location"]).text
    assert "Promoted world 2.0-1 from dev to staging (was 1.0-1)." in page
    cells = matrix(page)
    assert cells["world", "staging"].text.startswith("2.0-1 2 kept")
    assert cells["world", "staging"].classes == {"cell"}
    assert cells["world", "prod"].classes == {"cell", "drift-behind"}
    assert release.repo().pin_map("staging")["world"] == "2.0-1"
    history = client.get("/ui/history?channel=staging&package=world").text
    row = history.split('<tr data-action="promote" data-channel="staging" data-package="world">')
    assert len(row) == 3  # promote_all when the repository was built, then ours (first)
    assert '<td class="actor">token:release</td>' in row[1].split("</tr>")[0]
    assert "token:release" not in row[2]


def test_rollback_through_the_form(signed_in: tuple[FlaskClient, str], release: ReleaseEnv) -> None:
    client, csrf = signed_in
    done = client.post(
        "/ui/channels/dev/rollback",
        data={"csrf_token": csrf, "package": "hello", "to": "1.0-1"},
    )
    assert (done.status_code, done.headers["Location"]) == (303, "/ui/packages/hello")
    assert "Rolled back hello in dev: 2.0-1 → 1.0-1." in client.get("/ui/packages/hello").text
    cell = matrix(client.get("/ui/").text)["hello", "dev"]
    assert cell.text.startswith("1.0-1 2 kept")
    assert cell.classes == {"cell", "drift-rollback"}
    assert release.repo().pin_map("dev")["hello"] == "1.0-1"
    (event,) = release.repo().history("dev", "hello")[-1:]
    assert (event["action"], event["actor"]) == ("rollback", "token:release")


def test_action_errors_are_flashed(signed_in: tuple[FlaskClient, str]) -> None:
    client, csrf = signed_in
    done = client.post(
        "/ui/channels/staging/promote",
        data={"csrf_token": csrf, "package": "hello", "version": "9.9-1", "from": "dev"},
    )
    assert done.status_code == 303
    page = client.get(done.headers["Location"]).text
    assert "Promoting hello 9.9-1 to staging failed: hello 9.9-1 is not in channel" in page
    done = client.post(
        "/ui/channels/prod/promote",
        data={"csrf_token": csrf, "package": "hello", "version": "2.0-1", "from": "dev"},
    )
    page = client.get(done.headers["Location"]).text
    assert "channel &#39;prod&#39; does not promote from &#39;dev&#39;" in page
    missing = client.post("/ui/channels/dev/rollback", data={"csrf_token": csrf})
    assert missing.status_code == 400
    assert "the form field &#39;package&#39; is missing" in missing.text


def test_post_without_or_with_a_wrong_csrf_token_is_refused(
    signed_in: tuple[FlaskClient, str], release: ReleaseEnv
) -> None:
    client, csrf = signed_in
    form = {"package": "world", "version": "2.0-1", "from": "dev"}
    assert client.post("/ui/channels/staging/promote", data=form).status_code == 403
    wrong = {**form, "csrf_token": csrf[:-2] + "xx"}
    assert client.post("/ui/channels/staging/promote", data=wrong).status_code == 403
    rollback = {"package": "hello"}
    assert client.post("/ui/channels/dev/rollback", data=rollback).status_code == 403
    assert release.repo().pin_map("staging")["world"] == "1.0-1"
    assert release.repo().pin_map("dev")["hello"] == "2.0-1"
    # a token from another session is no good either
    other = client.application.test_client()
    other_csrf = sign_in(other, release.secrets["release"])
    assert other_csrf != csrf
    stolen = {**form, "csrf_token": other_csrf}
    assert client.post("/ui/channels/staging/promote", data=stolen).status_code == 403


def test_read_token_gets_no_buttons_and_a_403(client: FlaskClient, release: ReleaseEnv) -> None:
    csrf = sign_in(client, release.secrets["reader"])
    for path in ("/ui/", "/ui/packages/hello", "/ui/packages/world"):
        main = client.get(path).text.split("<main>")[1]
        assert "Promote to" not in main, path
        assert "Roll back" not in main, path
        assert "/promote" not in main and "/rollback" not in main, path
    forged = {"csrf_token": csrf, "package": "world", "version": "2.0-1", "from": "dev"}
    assert client.post("/ui/channels/staging/promote", data=forged).status_code == 403
    forged = {"csrf_token": csrf, "package": "hello"}
    assert client.post("/ui/channels/staging/rollback", data=forged).status_code == 403
    assert release.repo().pin_map("staging") == {
        "hello": "1.0-1",
        "world": "1.0-1",
        "tool": "1.0-1",
    }


def test_buttons_follow_the_channels_a_token_may_promote(
    client: FlaskClient, release: ReleaseEnv
) -> None:
    sign_in(client, release.secrets["stager"])  # promote on dev and staging only
    cells = matrix(client.get("/ui/").text)
    assert "Promote to staging" in cells["hello", "dev"].text
    assert {ch for _pkg, ch in cells} == {"dev", "staging"}
    staging = client.get("/ui/packages/hello").text.split('id="channel-staging"')[1]
    assert "Roll back" not in staging  # nothing earlier than 1.0-1 to go back to
    assert "Promote to prod" not in staging


def test_history_filters(signed_in: tuple[FlaskClient, str]) -> None:
    client, _csrf = signed_in
    page = client.get("/ui/history?channel=staging&package=hello").text
    rows = re.findall(r'<tr data-action="(\w+)" data-channel="(\w+)" data-package="(\w+)">', page)
    assert rows == [
        ("rollback", "staging", "hello"),
        ("promote", "staging", "hello"),
        ("promote", "staging", "hello"),
    ]
    everything = client.get("/ui/history").text
    assert {c for _a, c, _p in re.findall(r'<tr data-action="(\w+)" data-channel="(\w+)" '
                                          r'data-package="(\w+)">', everything)} == {
        "dev", "staging", "prod",
    }  # fmt: skip
    assert client.get("/ui/history?channel=nope").status_code == 404


def test_a_package_scoped_token_acts_only_on_its_packages(
    client: FlaskClient, release: ReleaseEnv
) -> None:
    secret = tokens_of(release.config_path).create(
        "hello-only", "promote", ["*"], packages=["hel*"]
    )
    csrf = sign_in(client, secret)
    assert 'action="/ui/channels/staging/promote"' not in client.get("/ui/packages/world").text
    assert 'action="/ui/channels/staging/promote"' in client.get("/ui/packages/hello").text
    form = {"csrf_token": csrf, "version": "2.0-1", "from": "dev"}
    other = client.post("/ui/channels/staging/promote", data={**form, "package": "world"})
    assert other.status_code == 403
    own = client.post("/ui/channels/staging/promote", data={**form, "package": "hello"})
    assert own.status_code == 303
    assert release.repo().pin_map("staging")["world"] == "1.0-1"
