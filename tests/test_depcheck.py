"""The dependency check at promotion: carried dependencies must be met by the target's
pins after the promotion, or the promotion is refused and nothing changes;
``--with-deps`` brings them along from the source in the same commit."""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from publisher.audit import read_events
from publisher.depcheck import may_need, relations, satisfies, unsatisfied
from publisher.errors import DependencyUnsatisfied
from publisher.repo import Repository
from publisher.state import Entry
from tests.conftest import snapshot

DebFactory = Callable[..., Path]


@pytest.mark.parametrize(
    ("version", "constraint", "ok"),
    [
        ("2.0-1", (">=", "2.0"), True),
        ("1.9-1", (">=", "2.0"), False),
        ("2.0~rc1-1", (">=", "2.0"), False),
        ("1:1.0-1", (">>", "9.9"), True),
        ("2.0", ("=", "2.0"), True),
        ("2.0", ("<<", "2.0"), False),
        ("1.0", ("<=", "1.0-0"), True),
        (None, None, False),
        ("0.1", None, True),
    ],
)
def test_satisfies_in_dpkg_order(
    version: str | None, constraint: tuple[str, str] | None, ok: bool
) -> None:
    assert satisfies(version, constraint) is ok
    if version and constraint:
        op = {"<<": "lt", "<=": "le", "=": "eq", ">=": "ge", ">>": "gt"}[constraint[0]]
        dpkg = subprocess.run(["dpkg", "--compare-versions", version, op, constraint[1]])
        assert (dpkg.returncode == 0) is ok


def entry(depends: str) -> Entry:
    control = f"Package: svc-a\nVersion: 1.0\nArchitecture: all\nDepends: {depends}\n"
    return Entry("svc-a", "1.0", "all", "pool/x", 1, "", "", "", control)


def test_groups_alternatives_and_what_is_out_of_scope() -> None:
    pins = {"svc-lib": "1.5", "svc-new": "3.0"}
    carried = {"svc-lib", "svc-new", "svc-gone"}.__contains__
    needs = unsatisfied(
        [entry("python3 (>= 3.11), svc-lib (>= 2.0), svc-lib (>= 1.0) | svc-new, svc-gone")],
        pins.get,
        carried,
    )
    assert [(n.relation, n.names) for n in needs] == [
        ("svc-lib (>= 2.0)", ("svc-lib",)),
        ("svc-gone", ("svc-gone",)),
    ]
    # an alternative the repository does not carry may come from the OS: out of scope
    assert unsatisfied([entry("svc-lib (>= 9) | libfoo1")], pins.get, carried) == []


def random_control(rng: random.Random, names: list[str]) -> str:
    """A control paragraph with relation fields in the shapes deb822 allows."""

    def alternative() -> str:
        return (
            rng.choice(names)
            + rng.choice(["", ":any", ":amd64"])
            + rng.choice(["", " (>= 1.0)", "(<<2)", " ( = 1:2-3 )"])
            + rng.choice(["", " [amd64 !i386]", " <!nocheck>"])
        )

    def value() -> str:
        groups = [
            " | ".join(alternative() for _ in range(rng.randint(1, 3)))
            for _ in range(rng.randint(1, 4))
        ]
        return rng.choice([", ", ",", " ,\n ", ",\n\t", ",\n# note\n "]).join(groups)

    text = "Package: p\nVersion: 1\n"
    for name in rng.sample(["Depends", "Pre-Depends", "pre-depends", "Recommends"], 2):
        text += f"{name}{rng.choice(['', ' '])}:{rng.choice([' ', '', chr(10) + ' '])}{value()}\n"
    return text + "Description: x\n"


def test_may_need_never_skips_a_carried_dependency() -> None:
    """The pre-check that spares parsing finds every name python-debian finds."""
    rng = random.Random(17)  # noqa: S311 - a reproducible sample, not crypto
    names = ["a", "b2", "lib-x", "c.d+", "svc", "zz"]
    skipped = 0
    for _ in range(1500):
        control = random_control(rng, names)
        carried = set(rng.sample(names, rng.randint(0, 3))).__contains__
        e = Entry("p", "1", "amd64", "p_1_amd64.deb", 1, "", "", "", control, "", "")
        real = any(carried(str(a["name"])) for _, gs in relations(e) for g in gs for a in g)
        assert may_need(e, carried) or not real, control
        skipped += not real
    assert 0 < skipped < 1500


@pytest.fixture
def released(make_repo: Callable[..., Repository], debs: DebFactory) -> Repository:
    """dev: svc-lib 1.0 and 2.0 (pin 2.0), svc-a needing svc-lib >= 2.0; prod: svc-lib 1.0."""
    repo = make_repo(channels={"dev": {}, "prod": {"promote_from": ["dev"]}})
    repo.publish("dev", [debs("svc-lib", "1.0"), debs("svc-lib", "2.0")])
    repo.publish(
        "dev", [debs("svc-a", "1.0", depends="svc-lib (>= 2.0), python3 (>= 3.11), libc6")]
    )
    repo.promote("svc-lib", "1.0", "dev", "prod")
    return repo


def test_a_promotion_that_leaves_a_dependency_unmet_is_refused(released: Repository) -> None:
    root = Path(str(released.config.storage.path))
    before = snapshot(root)
    for dry_run in (True, False):
        with pytest.raises(DependencyUnsatisfied) as refused:
            released.promote("svc-a", None, "dev", "prod", dry_run=dry_run)
        message = refused.value.message
        assert "svc-a 1.0 Depends: svc-lib (>= 2.0); prod has svc-lib 1.0" in message
        assert "python3" not in message and "libc6" not in message  # not carried: out of scope
        assert "--with-deps" in message
    assert snapshot(root) == before  # nothing changed
    assert released.pin_map("prod") == {"svc-lib": "1.0"}


def test_with_deps_promotes_the_dependency_in_the_same_commit(released: Repository) -> None:
    generation = released.generation("prod")
    planned = released.promote("svc-a", None, "dev", "prod", dry_run=True, with_deps=True)
    assert [(d["package"], d["version"], d["status"]) for d in planned["dependencies"]] == [
        ("svc-lib", "2.0", "planned")
    ]
    assert released.generation("prod") == generation
    done = released.promote("svc-a", None, "dev", "prod", with_deps=True)
    assert (done["package"], done["status"]) == ("svc-a", "promoted")
    assert [(d["package"], d["new_pin"]) for d in done["dependencies"]] == [("svc-lib", "2.0")]
    assert released.generation("prod") == generation + 1  # one commit
    assert released.pin_map("prod") == {"svc-a": "1.0", "svc-lib": "2.0"}
    (event,) = [e for e in read_events(released.storage, channel="prod") if e["package"] == "svc-a"]
    assert event["action"] == "promote"


def test_with_deps_fails_cleanly_when_the_source_cannot_help(
    make_repo: Callable[..., Repository], debs: DebFactory
) -> None:
    repo = make_repo(channels={"dev": {}, "prod": {"promote_from": ["dev"]}})
    repo.publish("dev", [debs("svc-lib", "1.0"), debs("svc-a", "1.0", depends="svc-lib (>= 2)")])
    with pytest.raises(DependencyUnsatisfied, match="'dev' cannot supply them either"):
        repo.promote("svc-a", None, "dev", "prod", with_deps=True)
    assert repo.pin_map("prod") == {}


def test_carries_decodes_only_shards_that_name_the_package(
    released: Repository, debs: DebFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ChannelState.carries answers like get(): a package with entries is carried;
    an absent one, or one whose entries are all removed, is not.  A shard whose bytes
    do not name the package is never decoded (the OS packages of every Depends)."""
    from publisher import state as state_mod

    released.publish("dev", [debs("svc-old", "1.0")])
    released.remove("svc-old", "1.0", "dev", force=True)  # a state without entries
    decoded: list[int] = []
    decode = state_mod.decode_shard

    def counting(data: bytes) -> state_mod.Shard:
        decoded.append(len(data))
        return decode(data)

    monkeypatch.setattr(state_mod, "decode_shard", counting)
    view = released.states.view("dev")
    for name in ("python3", "libc6", "adduser", "zz-nothing"):
        assert not view.carries(name)
        state = view.get(name)
        assert state is None or not state.entries
    decoded.clear()
    view = released.states.view("dev")
    assert not view.carries("python3") and not view.carries("zz-nothing")
    assert decoded == []  # no shard of theirs names them
    assert view.carries("svc-lib") and view.carries("svc-a")
    assert not view.carries("svc-old")  # named in its shard, decoded, no entries
    assert len(decoded) >= 1
