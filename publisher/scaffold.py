"""``aptship init DIR``: the embedded default repository, ready in one command."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from publisher.errors import ConfigError
from publisher.signing import generate_dev_key

CONFIG_TEMPLATE = """\
# aptship configuration written by `aptship init`.  Every key is documented in
# docs/config.md; conf/aptship.toml in the source tree shows them all.

[repository]
origin = "aptship"
label = "aptship"

[storage]
type = "local"
path = "repo"            # relative to this file

[signing]
gnupghome = "gnupg"      # development key without passphrase, made by `aptship init`
keys = ["{fingerprint}"]

[server]
# Access tokens live in the repository's storage (`aptship token create`).
secret_key_file = "session.key"  # signs dashboard sessions; mode 600, made by `aptship init`

[channels.dev]
description = "Every build from CI"

[channels.staging]
description = "Release candidates"
promote_from = ["dev"]

[channels.prod]
description = "What runs in production"
promote_from = ["staging"]
"""


def write_secret(path: Path) -> None:
    """A new random secret in ``path``, created with mode 600 (never overwritten)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; refusing to overwrite it") from None
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secrets.token_urlsafe(48) + "\n")


def init_repository(target: Path) -> Path:
    """Write ``target/aptship.toml``, a dev signing key and the dashboard's session secret
    (``session.key``, mode 600); refuse to overwrite any of them."""
    cfg_path = target / "aptship.toml"
    if cfg_path.exists():
        raise ConfigError(f"{cfg_path} already exists; refusing to overwrite it")
    for taken in (target / "gnupg", target / "session.key"):
        if taken.exists():
            raise ConfigError(f"{taken} already exists; refusing to overwrite it")
    target.mkdir(parents=True, exist_ok=True)
    fingerprint = generate_dev_key(target / "gnupg", "aptship development key", "aptship@localhost")
    (target / "repo").mkdir(exist_ok=True)
    write_secret(target / "session.key")
    cfg_path.write_text(CONFIG_TEMPLATE.format(fingerprint=fingerprint), encoding="utf-8")
    return cfg_path
