"""Storage backends behind one interface: ``local`` (default) and ``s3``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from publisher.errors import ConfigError
from publisher.storage.base import ObjectInfo, PutResult, Storage

if TYPE_CHECKING:
    from publisher.config import StorageConfig

__all__ = ["ObjectInfo", "PutResult", "Storage", "open_storage"]


def open_storage(cfg: StorageConfig) -> Storage:
    """Build the backend the config names.  boto3 is imported only for S3."""
    if cfg.type == "local":
        from publisher.storage.local import LocalStorage

        if cfg.path is None:
            raise ConfigError("storage.path is required for local storage")
        return LocalStorage(cfg.path)
    if cfg.type == "s3":
        from publisher.storage.s3 import S3Storage

        return S3Storage.from_config(cfg)
    raise ConfigError(f"unknown storage type {cfg.type!r}")
