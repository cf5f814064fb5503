"""The dependency check at promotion (docs/cli.md, ``promote``).

Before a promotion commits, every promoted package's ``Depends`` and
``Pre-Depends`` on packages that this repository carries must be satisfied by the
target channel's pins as they will be after the promotion.  A dependency on a
package the repository does not carry (the base OS, python3, libc) is out of scope.
An alternative group (``a | b``) is satisfied by any of its members, and is out of
scope when one of them is not carried (the OS may provide it).

With ``--with-deps`` the unsatisfied dependencies are added to the promotion from
the source channel's pins, repeatedly, until nothing is missing or the source
cannot help.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from debian.debian_support import Version

from publisher.state import Entry

if TYPE_CHECKING:
    from debian.deb822 import PkgRelation

FIELDS = ("Pre-Depends", "Depends")
_OPS: dict[str, Callable[[int], bool]] = {
    "<<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    "=": lambda c: c == 0,
    ">=": lambda c: c >= 0,
    ">>": lambda c: c > 0,
}


@dataclass(frozen=True)
class Need:
    """One unsatisfied dependency group of one promoted entry."""

    package: str
    version: str
    field: str
    relation: str  # the group as written, e.g. "svc-lib (>= 2.0)"
    names: tuple[str, ...]  # the packages that could satisfy it (all carried)

    def describe(self, channel: str, pins: Mapping[str, str | None]) -> str:
        have = ", ".join(f"{n} {pins.get(n) or 'not pinned'}" for n in self.names)
        return f"{self.package} {self.version} {self.field}: {self.relation}; {channel} has {have}"


Groups = list[list["PkgRelation.ParsedRelation"]]


def relations(entry: Entry) -> list[tuple[str, Groups]]:
    """(field, OR-groups) of the entry's Pre-Depends and Depends."""
    from debian.deb822 import Deb822, PkgRelation  # compiles ~90 regexes: only when needed

    control = Deb822(entry.control)
    return [(f, PkgRelation.parse_relations(control[f])) for f in FIELDS if control.get(f)]


def may_need(entry: Entry, carried: Callable[[str], bool]) -> bool:
    """Whether a Pre-Depends or Depends of ``entry`` names a carried package, read
    from the raw control text without parsing the relations: each alternative's
    name is found exactly as python-debian's ``PkgRelation`` finds it (split on
    commas and bars, then the leading name), so False means :func:`relations` would
    name nothing carried either (most packages depend on the OS alone)."""
    for match in _RELATION_FIELDS.finditer(entry.control):
        value = _COMMENTS.sub("", match.group(1))
        for alternative in _ALTERNATIVES.split(value.strip()):
            name = _NAME.match(alternative)
            if name is not None and carried(name.group(1)):
                return True
    return False


# A Pre-Depends or Depends field and its continuation lines (deb822 field names are
# case-insensitive; blanks may precede the colon); python-debian's separators and
# name pattern (``PkgRelation.parse_relations``).
_RELATION_FIELDS = re.compile(r"^(?:pre-)?depends[ \t]*:(.*(?:\n[ \t#].*)*)", re.I | re.M)
_COMMENTS = re.compile(r"\n#.*")
_ALTERNATIVES = re.compile(r"\s*[,|]\s*")
_NAME = re.compile(r"\s*([a-zA-Z0-9][a-zA-Z0-9.+\-]*)")


def satisfies(version: str | None, constraint: tuple[str, str] | None) -> bool:
    """Whether ``version`` (None: not pinned) meets ``(op, ver)`` (None: any version)."""
    if version is None:
        return False
    if constraint is None:
        return True
    op, wanted = constraint
    have, want = Version(version), Version(wanted)
    return _OPS[op]((have > want) - (have < want))


def unsatisfied(
    entries: Iterable[Entry],
    pin_of: Callable[[str], str | None],
    carried: Callable[[str], bool],
) -> list[Need]:
    """The dependency groups of ``entries`` that the target's pins leave unmet."""
    needs: list[Need] = []
    for entry in entries:
        if not may_need(entry, carried):
            continue
        for field, groups in relations(entry):
            for group in groups:
                names = tuple(str(alt["name"]) for alt in group)
                if not all(carried(name) for name in names):
                    continue  # the OS may provide an alternative: out of scope
                if any(satisfies(pin_of(str(alt["name"])), alt["version"]) for alt in group):
                    continue
                written = _relation_text(group)
                needs.append(Need(entry.package, entry.version, field, written, names))
    return needs


def _relation_text(group: Any) -> str:
    from debian.deb822 import PkgRelation

    return str(PkgRelation.str([group]))
