"""Debian distributions (codenames) as a dimension of every channel (docs/config.md).

With ``[repository] distributions = ["bookworm", "trixie"]`` each configured channel
exists once per codename as its own signed suite, ``<codename>-<channel>``
(``dists/bookworm-prod/``).  A .deb says which distribution it was built for in its
version: ``aptship build --dist`` stamps ``+debNN`` (``1.4.2-1+deb13``), the way
Debian's own stable updates do (``+deb12u1``).  A release is the upstream version,
``1.4.2``, shared by every distribution's build of it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from debian.debian_support import Version

from publisher.errors import ConfigError, UsageError, WrongDistribution

if TYPE_CHECKING:
    from publisher.config import Config
    from publisher.debfile import DebInfo

# Debian's release numbers; the ``+debNN`` stamp uses them.
RELEASES: dict[str, int] = {
    "buster": 10,
    "bullseye": 11,
    "bookworm": 12,
    "trixie": 13,
    "forky": 14,
    "duke": 15,
}
_STAMP = re.compile(r"\+deb([0-9]{1,3})(?:u[0-9]+)?$")


def check_codename(codename: str, where: str) -> str:
    if codename not in RELEASES:
        known = ", ".join(RELEASES)
        raise ConfigError(f"{where}: unknown distribution {codename!r} (known: {known})")
    return codename


def suite_name(codename: str, channel: str) -> str:
    """The apt suite of ``channel`` in distribution ``codename``."""
    return f"{codename}-{channel}"


def stamp(codename: str) -> str:
    """The version suffix of a build for ``codename``: ``+deb13`` for trixie."""
    return f"+deb{RELEASES[codename]}"


def stamped_codename(version: str) -> str | None:
    """The codename a Debian version is stamped for (``+debNN`` in its revision), if any."""
    revision = Version(version).debian_revision or ""
    match = _STAMP.search(revision)
    if match is None:
        return None
    number = int(match.group(1))
    return next((name for name, n in RELEASES.items() if n == number), f"deb{number}")


def distribution_of(
    filename: str, version: str, carried: tuple[str, ...], explicit: str | None
) -> str:
    """The distribution a .deb goes to: its ``+debNN`` stamp, or ``explicit`` (``--dist``).

    Both given and different, neither given, or one the repository does not carry: a
    :class:`WrongDistribution` naming the file.
    """
    stamped = stamped_codename(version)
    if explicit is not None and stamped is not None and explicit != stamped:
        raise WrongDistribution(
            f"{filename}: version {version} is stamped for {stamped}, not {explicit}"
        )
    codename = explicit or stamped
    if codename is None:
        raise WrongDistribution(
            f"{filename}: version {version} carries no +debNN distribution stamp; build it "
            "with `aptship build --dist CODENAME` or name the distribution with --dist"
        )
    if codename not in carried:
        raise WrongDistribution(
            f"{filename}: distribution {codename} is not carried by this repository "
            f"(distributions: {', '.join(carried)})"
        )
    return codename


def release_of(version: str) -> str:
    """The upstream part of a Debian version (no epoch, no revision): its release."""
    return Version(version).upstream_version or version


def release_key(release: str) -> str:
    """A release as given by a user (PEP 440 ``1.4.2``, or a Debian upstream) -> the
    Debian upstream version it maps to."""
    try:
        from publisher import pep440  # packaging: only for Python release names

        upstream = pep440.debian_upstream_version(release)
    except UsageError:  # not PEP 440: take it as a Debian upstream version
        return release
    return upstream.split(":", 1)[-1]


def route_by_distribution(
    config: Config, channel: str, infos: Sequence[DebInfo], dist: str | None
) -> dict[str, list[DebInfo]]:
    """Which suite each .deb goes to (suite -> its .debs, in distribution order).

    Without distributions, everything goes to ``channel``.  With them, ``channel`` is
    a configured channel (each .deb to its distribution's suite) or one suite (a .deb
    for another distribution is refused); the pool key gets the distribution.
    """
    if not config.distributions:
        if dist is not None:
            raise UsageError("--dist needs [repository] distributions in the config")
        config.channel(channel)
        return {channel: list(infos)}
    if dist is not None and dist not in config.distributions:
        raise WrongDistribution(
            f"distribution {dist} is not carried by this repository "
            f"(distributions: {', '.join(config.distributions)})"
        )
    suites = {s.distribution: s.name for s in config.suites(channel)}
    routed: dict[str, list[DebInfo]] = {name: [] for name in suites.values()}
    for info in infos:
        codename = distribution_of(info.path.name, info.version, config.distributions, dist)
        suite = suites.get(codename)
        if suite is None:
            raise WrongDistribution(
                f"{info.path.name}: a {codename} build does not go into {channel!r} "
                f"(a suite of {', '.join(c for c in suites if c)} only)"
            )
        routed[suite].append(replace(info, distribution=codename))
    return {suite: batch for suite, batch in routed.items() if batch}
