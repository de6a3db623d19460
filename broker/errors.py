"""The one error hierarchy; `api/errors.py` maps it to OpenWhisk's HTTP error shape in one place."""

from __future__ import annotations


class SquallError(Exception):
    """Base of every error Squall raises on purpose; `message` is safe to show a client."""

    default_message = "An internal error occurred."

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class BadRequest(SquallError):
    default_message = "The request content was malformed."


class Unauthorized(SquallError):
    default_message = "The supplied authentication is invalid."


class Forbidden(SquallError):
    default_message = "The supplied authentication is not authorized to access this resource."


class NotFound(SquallError):
    default_message = "The requested resource does not exist."


class NotAcceptable(SquallError):
    """A web action URL whose extension is none of the supported ones."""

    default_message = "The requested content type is not supported."


class Conflict(SquallError):
    default_message = "resource already exists"


class ConcurrentModification(Conflict):
    default_message = "Concurrent modification to resource detected."


class WrongCollection(Conflict):
    """The name is taken by an entity of another collection (an action where a trigger was asked for)."""

    default_message = "Resource by this name exists but is not in this collection."


class PayloadTooLarge(SquallError):
    default_message = "The request content was too large."


class Throttled(SquallError):
    default_message = "Too many requests in the last minute."


class Unavailable(SquallError):
    """A backbone service (NATS, MongoDB, Podman, invokers) cannot be reached."""

    default_message = (
        "The server is currently unavailable (because it is overloaded or down for maintenance)."
    )


class BackboneUnavailable(Unavailable):
    """NATS cannot be reached or has no leader for a stream right now (a reconnection, an election): passing,
    and no fault of the message being handled, so it never counts toward a handler's give-up."""


class StorageFull(Unavailable):
    """A stream, bucket or object store reached its byte bound and refuses new messages (discard-new)."""

    default_message = "The server has no room left to store this request; retry later."


class QuotaExceeded(Forbidden):
    """A namespace reached one of its quotas (entities): a 403, which retrying does not change."""


class InternalError(SquallError):
    pass
