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


class WrongDistribution(InvalidPackage):
    """A .deb for a distribution the target does not carry, or with none to read."""

    code = "wrong_distribution"


class TooLarge(InvalidPackage):
    """An upload past the configured size limit."""

    code = "too_large"
    http_status = 413


class ControlTooLarge(InvalidPackage):
    """A .deb whose control member (decompressed) or one control field is past the limit."""

    code = "control_too_large"


class ControlRejected(InvalidPackage):
    """Control text dpkg would read differently or refuse (bytes, layout, identity)."""

    code = "control_rejected"


class LimitExceeded(UsageError):
    """A request past one of the ``[limits]`` (the message names the config key)."""

    code = "limit_exceeded"


class BodyTooLarge(LimitExceeded):
    """A request body (JSON, form, multipart) past its limit."""

    code = "body_too_large"
    http_status = 413


class JsonTooDeep(LimitExceeded):
    """A JSON body nested deeper than ``limits.max_json_depth``."""

    code = "json_too_deep"


class BatchTooLarge(LimitExceeded):
    """More files in one publish than ``limits.max_batch_files``."""

    code = "batch_too_large"


class RequestTimeout(LimitExceeded):
    """A client that sends its request body too slowly (``limits.body_*``)."""

    code = "request_timeout"
    http_status = 408


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


class DependencyUnsatisfied(PolicyViolation):
    """A promotion would leave a carried dependency unmet in the target channel."""

    code = "dependency_unsatisfied"


class ReleaseIncomplete(PolicyViolation):
    """A release promotion where some distribution lacks the build (``--allow-partial``)."""

    code = "release_incomplete"


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


class PackageScope(Forbidden):
    """A token limited to some package names, used on another name."""

    code = "package_scope"


class OidcRejected(Unauthorized):
    """An ID token that cannot be exchanged: forged, expired, not yet valid, for another
    audience, from an unknown issuer or key, or signed with a refused algorithm."""

    code = "oidc_rejected"


class OidcReplay(OidcRejected):
    """An ID token (its ``jti``) that was already exchanged."""

    code = "oidc_replay"


class OidcClaims(Forbidden):
    """A valid ID token whose claims match no trusted publisher's required claims."""

    code = "oidc_claims"


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


class ReleaseSplit(StorageError):
    """A release operation that committed some distributions' suites and then failed.

    The suites already committed stay; running the same command again completes it
    (docs/cli.md, "Releases across distributions").
    """

    code = "release_split"


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


class InvalidReport(UsageError):
    """A host report (``PUT /api/v1/channels/<ch>/hosts/<id>``) that is not well formed."""

    code = "invalid_report"
    http_status = 400


class ReportTooLarge(InvalidReport):
    """A host report body past ``fleet.max_report_bytes``."""

    code = "report_too_large"
    http_status = 413


class HostOwned(Forbidden):
    """A report for a host record that another token created."""

    code = "host_owned"


class HostLimit(Forbidden):
    """A token that already created ``fleet.max_hosts_per_token`` hosts in a channel."""

    code = "host_limit"


class RateLimited(AptshipError):
    """Too many requests for one (token, host); retry after ``retry_after`` seconds."""

    code = "rate_limited"
    exit_code = 7
    http_status = 429

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RolloutTimeout(AptshipError):
    """``--wait`` gave up: too few hosts reported the new pin before the timeout.

    The promote or rollback itself stays committed.
    """

    code = "rollout_timeout"
    exit_code = 10
    http_status = 504
