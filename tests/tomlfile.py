"""The one TOML writer of the tests: ``tomli-w``, checked to round-trip through tomllib.

Every config file a test writes goes through :func:`toml_dumps` (or :func:`write_toml`),
so a value TOML cannot hold (None, a Path, a tuple) fails loudly in the test that
wrote it instead of turning into a config the test did not mean.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w


def toml_dumps(data: dict[str, Any]) -> str:
    """``data`` as TOML text; raises if reading it back gives anything else."""
    text = tomli_w.dumps(data)
    back = tomllib.loads(text)
    if back != data:
        raise ValueError(f"TOML does not round-trip: wrote {data!r}, read back {back!r}")
    return text


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` to ``path`` as TOML (see :func:`toml_dumps`); return ``path``."""
    path.write_text(toml_dumps(data))
    return path
