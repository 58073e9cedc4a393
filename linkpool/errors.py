"""Every error linkpool raises, in one tree.

Catch ``LinkPoolError`` to catch them all. Each class's docstring is its default
message, and each names what to do about it. ``exit_code`` is what the CLI exits with.

    LinkPoolError                     exit 1
    ├── ConfigError                   exit 2  bad or unreadable configuration
    │   └── UnknownPool               exit 2  a pool name that is not configured
    ├── InvalidClaim (ValueError)     exit 2  a claim's arguments are wrong; nothing was touched
    ├── InvalidArgument (ValueError)  exit 2  a command's option is wrong; nothing was done
    ├── PoolExhausted                 exit 3  no claimable link left in the pool
    ├── IdempotencyConflict           exit 1  a key reused with another recipient or data
    ├── ClaimExpired                  exit 1  a key's claim whose link no longer opens
    │                                         (in linkpool.claimer: it carries the Claim)
    ├── DatabaseError                 exit 1  the database cannot be reached or used
    │   ├── SchemaNotMigrated         exit 1  the database is behind the code
    │   └── DuplicateRecord           exit 1  a unique value (idempotency key, link URL) repeated
    ├── LeaseHeld                     exit 0  another process is already doing this job
    ├── LeaseInDoubt                  exit 1  a lease blocks this job, but its holder is not
    │                                         proven alive (an older linkpool, a clock ahead)
    ├── Interrupted                   exit 130 stopped by SIGINT or SIGTERM between two steps
    ├── LeaseLost                     exit 1  another process took over a job while it ran
    └── QualtricsError                exit 1  Qualtrics answered with an error or not at all
        ├── AuthError                         401 / 403: a wrong or revoked token
        ├── NotFound                          404: a wrong id (survey, list, directory…)
        ├── BadRequest                        400: Qualtrics refused the request as written
        ├── RateLimited                       429 after the retry budget was spent
        ├── ServerError                       5xx after the retry budget was spent
        ├── QualtricsTimeout                  no answer in time (after retries where allowed)
        ├── QualtricsUnreachable              connection refused / DNS failure (after retries)
        └── OutcomeUnknown                    a POST got no clear answer: it may have taken effect
"""

from __future__ import annotations

from typing import Any, ClassVar


class LinkPoolError(Exception):
    """linkpool failed."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str | None = None, **context: Any) -> None:
        # A docstring wrapped over lines is still one line of message.
        self.message = message or " ".join((self.__doc__ or "").split())
        self.context = context
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class ConfigError(LinkPoolError):
    """The configuration is invalid: fix the file named in the message."""

    exit_code = 2


class UnknownPool(ConfigError):
    """No pool of that name is configured."""

    def __init__(self, pool: str, configured: list[str] | tuple[str, ...]) -> None:
        names = ", ".join(sorted(configured)) or "none"
        super().__init__(
            f"unknown pool {pool!r}; configured pools: {names}",
            pool=pool,
            configured=list(configured),
        )
        self.pool = pool
        self.configured = list(configured)


class InvalidClaim(LinkPoolError, ValueError):
    """The claim's arguments are invalid; nothing was claimed."""

    exit_code = 2


class InvalidArgument(LinkPoolError, ValueError):
    """An option of the command is invalid; nothing was done."""

    exit_code = 2


class PoolExhausted(LinkPoolError):
    """The pool has no claimable link: run `linkpool refill`, or raise target_available."""

    exit_code = 3

    def __init__(self, pool: str, *, too_old: int = 0) -> None:
        if too_old:
            detail = f"{too_old} available link(s) have less than min_remaining left and are not handed out"
        else:
            detail = "no available links at all"
        super().__init__(
            f"pool {pool!r} is exhausted: {detail}; run `linkpool refill` "
            "(or raise target_available / low_water)",
            pool=pool,
            too_old=too_old,
        )
        self.pool = pool
        self.too_old = too_old


class IdempotencyConflict(LinkPoolError):
    """This idempotency key was already used with a different recipient or data."""

    def __init__(self, pool: str, key: str) -> None:
        super().__init__(
            f"idempotency key {key!r} in pool {pool!r} was already used with a different "
            "recipient or data; use a new key for a new claim",
            pool=pool,
            key=key,
        )
        self.pool = pool
        self.key = key


class DatabaseError(LinkPoolError):
    """The database cannot be reached or used: check [database] url and that the server is up."""


class SchemaNotMigrated(DatabaseError):
    """The database schema is not up to date: run `linkpool db upgrade`."""


class DuplicateRecord(DatabaseError):
    """A row would repeat a value that must be unique (an idempotency key, a link's URL):
    nothing was written."""


class LeaseHeld(LinkPoolError):
    """Another process holds this job's lease and renewed it just now: it is already running."""

    exit_code = 0


class Interrupted(LinkPoolError):
    """Stopped on request (SIGINT or SIGTERM) between two steps: the next run resumes."""

    exit_code = 130


class LeaseInDoubt(LinkPoolError):
    """This job's lease is held, but its holder was not seen renewing it and it has not lapsed:
    the message says what was seen and when the lease lapses."""


class LeaseLost(LinkPoolError):
    """Another process took over this job's lease: this run stopped; the new holder resumes."""


class QualtricsError(LinkPoolError):
    """Qualtrics answered with an error."""

    def __init__(
        self,
        message: str | None = None,
        *,
        status_code: int | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        request_id: str | None = None,
        method: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.error_code = error_code
        self.error_message = error_message
        self.request_id = request_id
        self.method = method
        self.endpoint = endpoint
        base = message or (type(self).__doc__ or "").strip()
        parts = [base]
        if method and endpoint:
            parts.append(f"({method} {endpoint}")
            parts[-1] += f" → {status_code})" if status_code else ")"
        if error_message:
            parts.append(f"Qualtrics said: {error_message}")
        if error_code:
            parts.append(f"[errorCode {error_code}]")
        if request_id:
            parts.append(f"[requestId {request_id}]")
        super().__init__(" ".join(parts))


class AuthError(QualtricsError):
    """Qualtrics refused the API token: check the variable named by api_token_env."""


class NotFound(QualtricsError):
    """Qualtrics does not know that id: check survey_id, directory_id and the datacenter."""


class BadRequest(QualtricsError):
    """Qualtrics refused the request as written."""


class RateLimited(QualtricsError):
    """Qualtrics kept rate-limiting us: lower requests_per_minute or try again later."""


class ServerError(QualtricsError):
    """Qualtrics is failing (5xx): try again later."""


class QualtricsTimeout(QualtricsError):
    """Qualtrics did not answer in time: try again later or raise [qualtrics] timeout."""


class QualtricsUnreachable(QualtricsError):
    """Qualtrics cannot be reached: check the network, base_url or datacenter."""


class WrongDatacenter(QualtricsError):
    """Qualtrics proxied the request to another datacenter: set base_url to the host it names."""


class ImportFailed(QualtricsError):
    """A contact import ended as failed: the list is abandoned and replaced."""


class OutcomeUnknown(QualtricsError):
    """A POST got no clear answer and may have taken effect: look up what it created."""
