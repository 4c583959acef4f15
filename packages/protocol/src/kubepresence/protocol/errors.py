"""Error categories that travel across gRPC, so the CLI knows whom to blame.

Every part raises `KubepresenceError` (or a subclass) for expected failures. On the server
side `transport` turns it into a gRPC status whose code encodes the category; on the client
side `from_grpc_error` turns the status back into the same category. Anything else that
escapes a servicer is a bug and arrives as INTERNAL.
"""

from __future__ import annotations

import enum

from grpclib.const import Status
from grpclib.exceptions import GRPCError


class Category(enum.Enum):
    """Whom an error blames."""

    USER = "user"  # bad input: the command line must change
    CONFIG = "config"  # kubeconfig or machine setup
    CLUSTER = "cluster"  # the cluster refused or cannot be reached
    INTERNAL = "internal"  # a bug: the log file tells more


class KubepresenceError(Exception):
    """An expected failure with a one-line message for the user."""

    category: Category = Category.INTERNAL
    # A more specific status for clients that act on it (e.g. NOT_FOUND: arrive again).
    status: Status | None = None

    def __init__(self, message: str, category: Category | None = None) -> None:
        super().__init__(message)
        self.message = message
        if category is not None:
            self.category = category


class UserError(KubepresenceError):
    category = Category.USER


class NotFoundError(UserError):
    """What the request names does not exist (any more); clients may act on NOT_FOUND."""

    status = Status.NOT_FOUND


class ConfigError(KubepresenceError):
    category = Category.CONFIG


class ClusterError(KubepresenceError):
    category = Category.CLUSTER


class InternalError(KubepresenceError):
    category = Category.INTERNAL


# One status code per category on the way out; on the way in, codes that other gRPC
# servers use for the same kind of failure map to the same category.
_STATUS_OF = {
    Category.USER: Status.INVALID_ARGUMENT,
    Category.CONFIG: Status.FAILED_PRECONDITION,
    Category.CLUSTER: Status.UNAVAILABLE,
    Category.INTERNAL: Status.INTERNAL,
}
_CATEGORY_OF = {
    Status.INVALID_ARGUMENT: Category.USER,
    Status.NOT_FOUND: Category.USER,
    Status.ALREADY_EXISTS: Category.USER,
    Status.OUT_OF_RANGE: Category.USER,
    Status.FAILED_PRECONDITION: Category.CONFIG,
    Status.UNAVAILABLE: Category.CLUSTER,
    Status.DEADLINE_EXCEEDED: Category.CLUSTER,
    Status.PERMISSION_DENIED: Category.CLUSTER,
    Status.UNAUTHENTICATED: Category.CLUSTER,
    # The peer lacks the call: an older traffic manager (the daemons on the workstation
    # come from the CLI's own installation).
    Status.UNIMPLEMENTED: Category.CLUSTER,
}


def unexpected_error_message(error: BaseException, log_location: str) -> str:
    """One line for a bug: the error's type and first line, and where its traceback is."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0][:300]}" if lines else type(error).__name__
    return f"unexpected error ({text}); the traceback is in {log_location}"


def to_grpc_error(error: KubepresenceError) -> GRPCError:
    """The gRPC status that carries `error` to a client."""
    return GRPCError(error.status or _STATUS_OF[error.category], error.message)


def from_grpc_error(error: GRPCError) -> KubepresenceError:
    """The category and message a client reports for a failed RPC (any other status, such
    as UNKNOWN or INTERNAL, is a bug somewhere: INTERNAL)."""
    return _from_status(error.status, error.message or "")


def from_status_name(code: str, message: str) -> KubepresenceError:
    """As `from_grpc_error`, for a status named in lower case ("not_found"), as the JSON
    calls carry it (see `jsoncalls`); an unknown name is UNKNOWN."""
    try:
        status = Status[code.upper()]
    except KeyError:
        status = Status.UNKNOWN
    return _from_status(status, message)


def _from_status(status: Status, message: str) -> KubepresenceError:
    category = _CATEGORY_OF.get(status, Category.INTERNAL)
    return KubepresenceError(message or status.name.lower(), category)
