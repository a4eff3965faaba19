"""The exceptions the API answers with a status of its own, importing no app.

`DomainError` is the base of the apps' domain errors: a broken rule that knows
its HTTP answer (services raise subclasses, such as tasks.models.TaskRuleError);
taskmgmt.errors turns any of them into the API's error format.
"""

from rest_framework import exceptions, status


class DomainError(Exception):
    status_code = 400
    title = "Bad Request"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The database is unavailable; try again shortly."
    default_code = "service_unavailable"
    # Sent as Retry-After, as for the cache and the middleware's 503s: a restart takes seconds.
    wait = 5


class CacheUnavailable(exceptions.APIException):
    """The shared cache (rate-limit counts, idempotency keys) is down: an outage to
    retry, not a bug. Each user of the cache says what it could not do."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The cache is unavailable; try again shortly."
    default_code = "cache_unavailable"
    # DRF's exception handler sends it as Retry-After; a Redis restart takes seconds.
    wait = 5
