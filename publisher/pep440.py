"""Map PEP 440 (Python) versions to Debian versions that dpkg sorts the same way.

PEP 440 order within one release ``R`` is::

    R.devN < R{a,b,rc}N.devM < R{a,b,rc}N < R{a,b,rc}N.postM < R < R+local < R.postN.devM
      < R.postN < R.postN+local < (the next release)

The Debian upstream version is ``R`` followed by these markers:

=================  ===============  =====================================================
PEP 440            Debian           why it sorts right under dpkg
=================  ===============  =====================================================
``R.devN``         ``R~~devN``      ``~~`` sorts before ``~a``/``~b``/``~rc``
``R{a,b,rc}N``     ``R~aN`` ...     ``~`` sorts before the end (final); a < b < rc
``.devN`` after    ``~devN``        a trailing ``~`` sorts before what it follows
  pre/post
``R.postN``        ``R+postN``      ``+`` sorts after the end and before ``.`` (``R.1``)
``R+label``        ``R+label``      after ``R``, before the next release
``E!R``            ``E:R``          dpkg's epoch
=================  ===============  =====================================================

Two limits, both outside what a published package should use:

- Releases that differ only by trailing zeros are equal in PEP 440 (``1.0 == 1.0.0``)
  but not in Debian; the release is kept as written, so keep one spelling per project.
- Local labels (``+label``) are compared by dpkg's rules (numbers numerically). PEP 440
  says local versions do not belong on public indexes; a local version still sorts
  after its public version and before the next release, but against another label or
  a ``.postN`` of the same public version, dpkg's order is the label's text order.
"""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version

from publisher.errors import UsageError

# Debian policy 5.6.12: the revision uses only alphanumerics and + . ~
REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+.~]*$")


def parse(version: str) -> Version:
    """Parse a PEP 440 version or raise :class:`UsageError` saying what is wrong."""
    try:
        return Version(version)
    except InvalidVersion:
        raise UsageError(
            f"version {version!r} is not a PEP 440 version (e.g. 1.2.0, 1.2.0rc1, "
            "1.2.0.post1, 1.2.0.dev3)"
        ) from None


def debian_upstream_version(version: str | Version) -> str:
    """The Debian ``[epoch:]upstream`` part for a PEP 440 version (no revision)."""
    v = version if isinstance(version, Version) else parse(version)
    out = ".".join(str(part) for part in v.release)
    if v.pre is not None:
        letter, number = v.pre
        out += f"~{letter}{number}"
    elif v.post is None and v.dev is not None:
        # A dev release of the final release sorts before every pre-release.
        out += "~"
    if v.post is not None:
        out += f"+post{v.post}"
    if v.dev is not None:
        out += f"~dev{v.dev}"
    if v.local is not None:
        out += f"+{v.local}"
    if v.epoch:
        out = f"{v.epoch}:{out}"
    return out


def check_revision(revision: str) -> str:
    if not REVISION_RE.match(revision):
        raise UsageError(
            f"invalid Debian revision {revision!r}: use letters, digits and + . ~ "
            "(starting with a letter or digit), e.g. 1 or 2~bpo12"
        )
    return revision


def debian_version(version: str | Version, revision: str = "1") -> str:
    """The full Debian version, ``[epoch:]upstream-revision``.

    >>> debian_version("1!2.0.0rc1")
    '1:2.0.0~rc1-1'
    """
    return f"{debian_upstream_version(version)}-{check_revision(revision)}"
