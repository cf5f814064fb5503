"""codecs.split checks a file against its layout without re-joining it."""

from __future__ import annotations

import gzip
import lzma

import pytest

from publisher import codecs

TEXTS = {"0a": b"Package: a\n\n" * 50, "7f": b"Package: b\n\n" * 3, "ff": b"Package: c\n\n"}


@pytest.mark.parametrize("fmt", ["plain", "gz", "xz"])
def test_split_round_trips_and_refuses_a_wrong_layout(fmt: str) -> None:
    parts = [codecs.make_part(fmt, b, t) for b, t in TEXTS.items()]
    data = codecs.join(fmt, parts)
    lay = codecs.layout(parts)
    assert codecs.split(fmt, data, lay) == parts
    whole = b"".join(TEXTS.values())
    assert {"plain": lambda d: d, "gz": gzip.decompress, "xz": lzma.decompress}[fmt](data) == whole
    assert [codecs.part_text(fmt, p) for p in parts] == list(TEXTS.values())
    wrong = [
        [[lay[0][0], int(str(lay[0][1])) + 1, *lay[0][2:]], *lay[1:]],  # too long
        [[lay[0][0], int(str(lay[0][1])) - 1, *lay[0][2:]], *lay[1:]],  # too short
        lay[:-1],  # a part missing
        [*lay, ["fe", 5, 1, 1][: len(lay[0])]],  # one too many
    ]
    if fmt == "xz":
        wrong.append([[lay[0][0], lay[0][1], lay[0][2], int(str(lay[0][3])) + 1], *lay[1:]])
    for bad in wrong:
        with pytest.raises(ValueError):
            codecs.split(fmt, data, bad)
    with pytest.raises(ValueError):
        codecs.split(fmt, data + b"x", lay)
    with pytest.raises(ValueError):
        codecs.split(fmt, data[:-1], lay)
