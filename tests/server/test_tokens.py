"""Token store and ``aptship token`` commands: digests only, in storage, shared by servers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from publisher.audit import AUDIT_PREFIX
from publisher.cli import cli
from publisher.errors import ConfigError, NotFound, UsageError
from publisher.storage.base import Storage
from publisher.storage.local import LocalStorage
from publisher.tokens import (
    DIGESTS_PREFIX,
    NAMES_PREFIX,
    TOKENS_PREFIX,
    Token,
    TokenStore,
    digest,
)
from repo_server import create_app
from tests.clirun import invoke
from tests.conftest import tokens_of
from tests.server.conftest import ServerEnv


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStorage(LocalStorage):
    """Local storage that counts reads and listings (to prove what a lookup costs)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads = 0
        self.lists = 0

    def read_bytes(self, key: str) -> bytes:
        self.reads += 1
        return super().read_bytes(key)

    def list(self, prefix: str) -> Any:
        self.lists += 1
        return super().list(prefix)


def stored(storage: Storage) -> dict[str, bytes]:
    return {i.key: storage.read_bytes(i.key) for i in storage.list(TOKENS_PREFIX)}


def test_create_stores_only_a_digest_one_object_per_token(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    store = TokenStore(storage)
    secret = store.create("ci", "publish", ["dev"], ["svc-*"])
    objects = stored(storage)
    assert set(objects) == {f"{NAMES_PREFIX}ci.json", f"{DIGESTS_PREFIX}{digest(secret)}.json"}
    assert not any(secret.encode() in body for body in objects.values())
    record = json.loads(objects[f"{DIGESTS_PREFIX}{digest(secret)}.json"])
    assert record["name"] == "ci" and record["role"] == "publish" and record["channels"] == ["dev"]
    assert record["packages"] == ["svc-*"] and record["created_at"].endswith("Z")
    assert len(secret) >= 43  # token_urlsafe(32)
    assert not [p for p in (tmp_path / "repo").rglob("*") if p.name.startswith(".tmp-")]


def test_authenticate_roles_and_channels(tmp_path: Path) -> None:
    store = TokenStore(LocalStorage(tmp_path / "repo"))
    dev_reader = store.create("reader", "read", ["dev"])
    promoter = store.create("rm", "promote", ["staging", "prod"])
    everything = store.create("root", "admin", ["*"])
    assert store.authenticate("nope") is None
    assert store.authenticate(dev_reader[:-1]) is None
    reader = store.authenticate(dev_reader)
    assert reader is not None and reader.name == "reader"
    assert reader.allows("read", "dev") and not reader.allows("read", "prod")
    assert not reader.allows("publish", "dev")
    rm = store.authenticate(promoter)
    assert rm is not None
    assert rm.allows("publish", "prod") and rm.allows("promote", "staging")
    assert not rm.allows("admin", "prod") and not rm.allows("read", "dev")
    root = store.authenticate(everything)
    assert root is not None and root.allows("admin", "anything")


def test_other_stores_see_changes_within_the_cache_time(tmp_path: Path) -> None:
    clock = Clock()
    storage = LocalStorage(tmp_path / "repo")
    server = TokenStore(storage, cache_seconds=5, clock=clock)
    admin = TokenStore(storage)  # another process: the CLI or another replica
    secret = digest("not yet")
    assert server.lookup(secret) is None
    made = admin.create("late", "read", ["dev"])
    assert server.authenticate(made) is not None  # never seen: read at once
    admin.revoke("late")
    clock.now += 4.9
    assert server.authenticate(made) is not None  # cached, within the documented bound
    clock.now += 0.1
    assert server.authenticate(made) is None  # the bound has passed: refused
    # A revocation through the same store takes effect at once.
    again = server.create("again", "read", ["dev"])
    assert server.authenticate(again) is not None
    server.revoke("again")
    assert server.authenticate(again) is None


def test_random_secrets_cost_one_read_each_and_no_listing(tmp_path: Path) -> None:
    clock = Clock()
    storage = CountingStorage(tmp_path / "repo")
    store = TokenStore(storage, cache_seconds=5, cache_size=100, clock=clock)
    good = store.create("ci", "read", ["dev"])
    storage.reads = storage.lists = 0
    for i in range(300):
        assert store.authenticate(f"guess-{i}") is None
    assert (storage.reads, storage.lists) == (300, 0)
    assert store.authenticate("guess-299") is None  # recent misses are cached
    assert storage.reads == 300
    assert len(store._missing.items) == 100  # bounded
    for _ in range(50):
        assert store.authenticate(good) is not None
    assert storage.reads == 301  # one read, then the cache
    for hostile in ("", "x" * 100_000, "\udcff", "../../etc/passwd"):
        assert store.authenticate(hostile) is None
    assert store.lookup("../" + "0" * 61) is None and storage.lists == 0


def test_expired_tokens_are_refused_and_not_listed(tmp_path: Path) -> None:
    store = TokenStore(LocalStorage(tmp_path / "repo"))
    secret, token = store.issue("oidc:x", "publish", ["dev"], [], lifetime=-1, grant={"p": "x"})
    assert token.expired() and store.authenticate(secret) is None
    assert store.list() == [] and [t.name for t in store.list(include_expired=True)] == ["oidc:x"]
    fresh, _ = store.issue("oidc:y", "publish", ["dev"], [], lifetime=60, grant={"p": "y"})
    found = store.authenticate(fresh)
    assert found is not None and found.grant == {"p": "y"}


def test_prune_deletes_only_expired_tokens(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    store = TokenStore(storage)
    static = store.create("ci", "read", ["dev"])
    old, _ = store.issue("oidc:a", "publish", ["dev"], [], lifetime=-1, grant={})
    live, _ = store.issue("oidc:b", "publish", ["dev"], [], lifetime=600, grant={})
    assert store.prune() == 1
    keys = set(stored(storage))
    assert f"{DIGESTS_PREFIX}{digest(old)}.json" not in keys
    assert {f"{DIGESTS_PREFIX}{digest(s)}.json" for s in (static, live)} <= keys
    assert store.prune(now=10**10) == 1  # far in the future: the live one too, never "ci"
    assert store.authenticate(static) is not None


def test_bad_input_is_refused(tmp_path: Path) -> None:
    store = TokenStore(LocalStorage(tmp_path / "repo"))
    store.create("ci", "read", ["dev"])
    with pytest.raises(UsageError, match="already exists"):
        store.create("ci", "read", ["dev"])
    with pytest.raises(UsageError, match="unknown role"):
        store.create("x", "root", ["dev"])
    for bad in ("bad name", "../x", ".hidden", "x" * 65, ""):
        with pytest.raises(UsageError, match="invalid token name"):
            store.create(bad, "read", ["dev"])
    with pytest.raises(UsageError, match="at least one channel"):
        store.create("x", "read", [])
    with pytest.raises(UsageError, match="invalid package pattern"):
        store.create("x", "read", ["dev"], ["../*"])
    with pytest.raises(NotFound, match="no token named"):
        store.revoke("ghost")
    assert [t.name for t in store.list()] == ["ci"]


def test_concurrent_creates_of_one_name_keep_one_token(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    first, second = TokenStore(storage), TokenStore(storage)
    kept = first.create("ci", "read", ["dev"])
    with pytest.raises(UsageError, match="already exists"):
        second.create("ci", "admin", ["*"])
    (only,) = second.list()
    assert only.role == "read" and second.authenticate(kept) is not None


def test_corrupt_record_is_a_config_error(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    store = TokenStore(storage)
    secret = store.create("ci", "read", ["dev"])
    storage.write_bytes(f"{DIGESTS_PREFIX}{digest(secret)}.json", b"{not json")
    with pytest.raises(ConfigError, match="corrupt"):
        TokenStore(storage).authenticate(secret)
    store.revoke("ci")  # a corrupt token can still be revoked by name
    assert stored(storage) == {}


# -- migration from server.tokens_file -------------------------------------------------
def legacy_file(path: Path, *tokens: Token) -> None:
    body = {"format": 1, "tokens": [t.record() for t in tokens]}
    path.write_text(json.dumps(body))


def test_tokens_file_is_imported_once_and_revocations_stick(make_env: Any, tmp_path: Path) -> None:
    legacy = tmp_path / "tokens.json"
    old = Token("old-ci", digest("old-secret"), "publish", ("dev",), "2024-01-01T00:00:00Z")
    legacy_file(legacy, old)
    env: ServerEnv = make_env(tokens=False, tokens_file=str(legacy))
    app = create_app(env.config_path)  # first start: imported
    client = app.test_client()
    auth = {"Authorization": "Bearer old-secret"}
    assert client.get("/api/v1/channels", headers=auth).status_code == 200
    store = tokens_of(env.config_path)
    assert [t.name for t in store.list()] == ["old-ci"]
    store.revoke("old-ci")
    restarted = create_app(env.config_path).test_client()  # a restart does not bring it back
    assert restarted.get("/api/v1/channels", headers=auth).status_code == 401
    assert store.list() == []
    code, out = run(env, "token", "migrate", "--json")
    assert code == 0 and json.loads(out)["imported"] == []
    # A token added to the file later is imported by the command (or the next start).
    new = Token("new-ci", digest("new-secret"), "read", ("dev",))
    legacy_file(legacy, old, new)
    code, out = run(env, "token", "migrate")
    assert code == 0 and "imported 1 token(s)" in out and "new-ci" in out
    assert store.authenticate("new-secret") is not None
    assert store.authenticate("old-secret") is None


def test_migrate_refuses_bad_files(env: ServerEnv, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no tokens file"):
        run(env, "token", "migrate")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="corrupt"):
        run(env, "token", "migrate", "--file", str(broken))


# -- CLI ------------------------------------------------------------------------------
def run(env: ServerEnv, *args: str) -> tuple[int, str]:
    result = invoke(cli, "--config", env.config_path, *args)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout


def test_token_commands(env: ServerEnv) -> None:
    code, out = run(env, "token", "create", "--name", "ops", "--role", "admin", "--channel", "*")
    assert code == 0
    secret = out.strip()
    assert "\n" not in secret and len(secret) >= 43
    store = tokens_of(env.config_path)
    found = store.authenticate(secret)
    assert found is not None and found.role == "admin" and found.channels == ("*",)

    code, out = run(env, "token", "list", "--json")
    rows = json.loads(out)
    assert {r["name"] for r in rows} == {"read", "publish", "promote", "admin", "other", "ops"}
    assert all(set(r) == {"name", "role", "channels", "created_at", "packages"} for r in rows)
    assert secret not in out

    code, out = run(env, "token", "list")
    assert code == 0 and "ops" in out and secret not in out

    assert run(env, "token", "revoke", "ops")[0] == 0
    assert tokens_of(env.config_path).authenticate(secret) is None  # a process starting now
    storage = env.repo().storage
    events = [json.loads(storage.read_bytes(i.key)) for i in storage.list(AUDIT_PREFIX)]
    assert [(e["action"], e["token"]["name"]) for e in events] == [
        ("token_create", "ops"),
        ("token_revoke", "ops"),
    ]


def test_token_create_for_an_unknown_channel_fails(env: ServerEnv) -> None:
    with pytest.raises(NotFound, match="unknown channel 'nope'"):
        run(env, "token", "create", "--name", "x", "--role", "read", "--channel", "nope")


def test_serve_checks_its_inputs_before_starting(env: ServerEnv, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.conf.py")
    with pytest.raises(ConfigError, match=r"gunicorn config .* not found"):
        run(env, "serve", "--gunicorn-config", missing)


# -- the admin API ------------------------------------------------------------------------
def test_token_api_create_list_revoke(client: FlaskClient, env: ServerEnv) -> None:
    admin = env.headers("admin")
    made = client.post(
        "/api/v1/tokens",
        json={"name": "svc-ci", "role": "publish", "channels": ["dev"], "packages": ["svc-*"]},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    body = made.get_json()
    secret = body.pop("token")
    assert body == {
        "name": "svc-ci",
        "role": "publish",
        "channels": ["dev"],
        "packages": ["svc-*"],
        "created_at": body["created_at"],
    }
    listed = client.get("/api/v1/tokens", headers=admin)
    assert listed.status_code == 200 and secret not in listed.text
    assert "svc-ci" in {t["name"] for t in listed.get_json()}
    assert digest(secret) not in listed.text
    new = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/channels", headers=new).status_code == 200
    assert client.delete("/api/v1/tokens/svc-ci", headers=admin).get_json() == {"revoked": "svc-ci"}
    assert client.get("/api/v1/channels", headers=new).status_code == 401
    assert client.delete("/api/v1/tokens/svc-ci", headers=admin).status_code == 404


@pytest.mark.parametrize("who", [None, "read", "publish", "promote", "other"])
def test_token_api_needs_an_unscoped_admin_on_every_channel(
    client: FlaskClient, env: ServerEnv, who: str | None
) -> None:
    body = {"name": "x", "role": "admin", "channels": ["*"]}
    expected = 401 if who is None else 403
    assert client.post("/api/v1/tokens", json=body, headers=env.headers(who)).status_code == (
        expected
    )
    assert client.get("/api/v1/tokens", headers=env.headers(who)).status_code == expected
    assert client.delete("/api/v1/tokens/read", headers=env.headers(who)).status_code == expected
    scoped = tokens_of(env.config_path).create("scoped", "admin", ["*"], ["svc-*"])
    refused = client.get("/api/v1/tokens", headers={"Authorization": f"Bearer {scoped}"})
    assert refused.status_code == 403
    assert [t.name for t in tokens_of(env.config_path).list()].count("x") == 0


@pytest.mark.parametrize(
    "body",
    [
        {"name": "bad name", "role": "read", "channels": ["dev"]},
        {"name": "x", "role": "root", "channels": ["dev"]},
        {"name": "x", "role": "read", "channels": []},
        {"name": "x", "role": "read", "channels": "dev"},
        {"name": "x", "role": "read", "channels": ["dev"], "packages": ["../x"]},
        {"name": "x", "role": "read", "channels": ["dev"], "packages": [1]},
        {"name": "read", "role": "read", "channels": ["dev"]},  # taken
        {"role": "read", "channels": ["dev"]},
        {"name": "x" * 100_000, "role": "read", "channels": ["dev"]},
    ],
)
def test_token_api_refuses_bad_bodies(
    client: FlaskClient, env: ServerEnv, body: dict[str, Any]
) -> None:
    before = {t.name for t in tokens_of(env.config_path).list()}
    got = client.post("/api/v1/tokens", json=body, headers=env.headers("admin"))
    assert got.status_code == 400, got.text
    assert {t.name for t in tokens_of(env.config_path).list()} == before
    unknown = {"name": "x", "role": "read", "channels": ["nope"]}
    assert client.post(
        "/api/v1/tokens", json=unknown, headers=env.headers("admin")
    ).status_code == (404)
