"""One structured log line per request, tagged with a request id."""

import logging
import time
import uuid

logger = logging.getLogger("taskmgmt.request")


class RequestLogMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.id = request.headers.get("X-Request-ID", "")[:64] or uuid.uuid4().hex
        started = time.perf_counter()
        response = self.get_response(request)
        user = getattr(request, "user", None)
        logger.info(
            "request",
            extra={
                "request_id": request.id,
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "user_id": str(user.pk) if getattr(user, "is_authenticated", False) else None,
                "remote_addr": request.META.get("REMOTE_ADDR"),
            },
        )
        response["X-Request-ID"] = request.id
        return response
