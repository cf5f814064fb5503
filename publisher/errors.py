"""The one exception tree of aptship.

Every error a user can meet is an :class:`AptshipError` subclass with a stable
``code`` (used in JSON error bodies), a process ``exit_code`` (used by the CLI) and
an ``http_status`` (used by the server).  The CLI and the server each map these in
exactly one place; nothing else tells errors apart, and never by their text.
"""

from __future__ import annotations


class AptshipError(Exception):
    """Base class: a failure with a message that says what to do."""

    code = "error"
    exit_code = 1
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class UsageError(AptshipError):
    """A command line or request that is not well formed."""

    code = "usage"
    exit_code = 2
    http_status = 400


class ConfigError(AptshipError):
    """The configuration file is missing, unreadable or invalid."""

    code = "config"
    exit_code = 2
    http_status = 500


class InvalidPackage(AptshipError):
    """A .deb (or its name, version, architecture) that cannot be accepted."""

    code = "invalid_package"
    exit_code = 3
    http_status = 400


class TooLarge(InvalidPackage):
    """An upload past the configured size limit."""

    code = "too_large"
    http_status = 413


class NotFound(AptshipError):
    """A channel, package, version or stored object that does not exist."""

    code = "not_found"
    exit_code = 4
    http_status = 404


class ImmutableConflict(AptshipError):
    """Different bytes for a name/version/arch that is already stored."""

    code = "immutable_conflict"
    exit_code = 5
    http_status = 409


class PolicyViolation(AptshipError):
    """An operation the channel policy forbids (promote path, pinned removal...)."""

    code = "policy_violation"
    exit_code = 5
    http_status = 422


class Unauthorized(AptshipError):
    """No credentials, or credentials that match no token."""

    code = "unauthorized"
    exit_code = 6
    http_status = 401


class Forbidden(AptshipError):
    """Valid credentials without the role or channel the operation needs."""

    code = "forbidden"
    exit_code = 6
    http_status = 403


class StorageError(AptshipError):
    """The storage backend failed (I/O error, S3 error, unreachable service)."""

    code = "storage"
    exit_code = 7
    http_status = 503


class PreconditionFailed(StorageError):
    """A create-only or compare-and-swap write lost against another writer.

    Internal: the publishing protocol catches it and retries; users see it only
    when retries are exhausted.
    """

    code = "precondition_failed"
    http_status = 409


class SweepBusy(StorageError):
    """A commit would reference a key that a running ``aptship gc`` sweep may delete.

    The commit loops wait and retry; users see it only when the sweep outlasts them.
    """

    code = "gc_sweep_busy"


class SigningError(AptshipError):
    """gpg failed to sign, or a signature did not verify."""

    code = "signing"
    exit_code = 8
    http_status = 500


class VerifyFailed(AptshipError):
    """`aptship verify` found problems in the repository."""

    code = "verify_failed"
    exit_code = 9
    http_status = 500
