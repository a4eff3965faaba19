"""The node's HTTP session with the server: tokens, retries, one JSON line per event."""

import base64
import http.client
import json
import random
import sys
import threading
import time
import urllib.error
import urllib.request

# Answers that mean "not done, try the same request again later" (a 500 too: the
# server's to fix, and every request a worker sends is safe to repeat).
RETRYABLE = {429, 500, 502, 503, 504}
MAX_PAUSE = 30.0  # seconds: the longest wait between retries without a Retry-After
# The longest Retry-After honoured: a rate limit's window is a minute; an answer asking
# for more than this is the server's or a proxy's mistake, not a reason to sit for hours.
MAX_RETRY_AFTER = 300.0


_LOG_LOCK = threading.Lock()


def log(event: str, **fields) -> None:
    """One JSON line per event on stdout, for a supervisor to collect (and tests to read)."""
    line = json.dumps({"time": time.time(), "event": event, **fields}) + "\n"
    # One write under a lock: print() writes the text and its newline apart, so the
    # heartbeat's thread and the main loop logging at once could run two lines together.
    with _LOG_LOCK:
        sys.stdout.write(line)
        sys.stdout.flush()


class Stopping(Exception):
    """The worker was told to stop while it waited to retry."""


class LoginRefused(Exception):
    pass


class TokenUnavailable(OSError):
    """A login or refresh that the server could not answer now (an outage, a 429): the
    caller retries on its own schedule, as for any request of its own that failed so."""

    def __init__(self, status: int | None, headers, message: str):
        super().__init__(message)
        self.status, self.headers = status, headers


class Api:
    """The node's session with the server: tokens, retries, one lock for the token refresh."""

    def __init__(self, server: str, email: str, password: str, halt: threading.Event):
        self.server = server.rstrip("/")
        self.email, self.password = email, password
        self.halt = halt  # ends every retry
        self.token_lock = threading.Lock()
        self.access = self.refresh_token = None
        self.access_expires = 0.0
        # A login refused (a wrong password, a deactivated node): every later ask gets the
        # same answer without another try, which would spend the account's login budget.
        self.refused: LoginRefused | None = None
        # A login or refresh refused 429: its Retry-After, when a try may be sent again
        # (time.monotonic()), and the refusal every ask until then gets without a request.
        self.token_not_before = 0.0
        self.token_unavailable: TokenUnavailable | None = None

    # --- HTTP ------------------------------------------------------------------

    def send(self, method: str, path: str, body=None, token=None):
        """(status, headers, JSON body or None) of one request; network errors, and an
        answer cut short, raise OSError."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            self.server + path, data=data, method=method, headers=headers
        )
        try:
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    status, answer_headers = response.status, response.headers
                    content = response.read()
            except urllib.error.HTTPError as error:
                status, answer_headers, content = error.code, error.headers, error.read()
        except http.client.HTTPException as error:
            # An answer cut short (a host killed mid-answer: IncompleteRead) or garbled is
            # a lost connection, retried as one: the request is safe to repeat.
            raise ConnectionError(f"the answer was cut short: {error!r}") from error
        try:
            payload = json.loads(content) if content else None
        except ValueError:
            payload = None
        return status, answer_headers, payload

    def call(
        self,
        method: str,
        path: str,
        body=None,
        *,
        authenticated=True,
        abort=None,
        max_pause: float | None = None,
        give_up_after: float | None = None,
    ):
        """(status, JSON body) of a request, retried through rate limits, outages and lost
        connections until `abort` (default: the halt) is set, or `give_up_after` seconds
        have passed (then the status is None).

        Each wait is the answer's Retry-After (up to MAX_RETRY_AFTER), else a backoff of up
        to MAX_PAUSE. `max_pause` caps each wait, Retry-After included: a heartbeat must be tried
        again within heartbeatSeconds, or the node looks dead while the server is up.
        Every request a worker repeats is safe to repeat: a claim taken but whose
        answer was lost is found again by `Worker.resume()`, shift-status to the
        status a task already has is a no-op, and progress keeps only the latest.
        """
        abort = abort or self.halt
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                token = self.token() if authenticated else None
                status, headers, payload = self.send(method, path, body, token)
            except TokenUnavailable as error:
                status, headers, payload = error.status, error.headers, {"message": str(error)}
            except OSError as error:
                status, headers, payload = None, {}, {"message": str(error)}
            attempt += 1
            if status == 401 and authenticated and attempt == 1:
                self.access_expires = 0.0  # revoked or expired early: get a new one, once
                continue
            if status is not None and status not in RETRYABLE:
                return status, payload if isinstance(payload, dict) else {}
            hinted = retry_after(headers)
            pause = (
                min(hinted, MAX_RETRY_AFTER)
                if hinted
                else min(MAX_PAUSE, 0.5 * 2 ** min(attempt, 6))
            )
            # Jitter first, then the cap: a heartbeat's wait must stay within its interval.
            pause = pause * random.uniform(1.0, 1.2)
            if max_pause is not None:
                pause = min(pause, max_pause)
            if give_up_after is not None and time.monotonic() - started + pause > give_up_after:
                log("gave_up", method=method, path=path, status=status)
                return None, {}
            # Without a status, why: a refused connection, an unknown host, a timeout.
            why = {"error": payload.get("message")} if status is None else {}
            log("retry", method=method, path=path, status=status, pause=round(pause, 2), **why)
            if abort.wait(pause):
                raise Stopping()

    # --- Tokens ----------------------------------------------------------------

    def token(self) -> str:
        """A valid access token: refreshed once a fifth of its life is left, or logged in anew.

        One try per call, under the lock: when the server cannot answer it now, the lock is
        released and TokenUnavailable raised, so each caller waits on its own schedule (a
        heartbeat within its interval), never behind another thread's long backoff.
        """
        with self.token_lock:
            if self.refused:
                raise self.refused
            if time.time() < self.access_expires:
                return self.access
            # A rate limit's window does not open early (an outage may end any time): the
            # heartbeat hears at once that no token is to be had, and keeps its schedule.
            if self.token_unavailable and time.monotonic() < self.token_not_before:
                raise self.token_unavailable
            if self.refresh_token:
                status, payload = self.try_once(
                    "/api/auth/refresh", {"refresh": self.refresh_token}
                )
                if status == 200:
                    token = self.keep(path="/api/auth/refresh", payload=payload)
                    log("refreshed")
                    return token
                # Refused (expired, or rotated by a try whose answer was lost): log in.
                self.refresh_token = None
            status, payload = self.try_once(
                "/api/auth/login", {"username": self.email, "password": self.password}
            )
            if status != 200:
                self.refused = LoginRefused(
                    f"login as {self.email}: {status} {payload.get('message')}"
                )
                raise self.refused
            details = payload.get("userDetails")
            details = details if isinstance(details, dict) else {}
            if details.get("role", "node") != "node":
                # An admin, say: logged in, but every claim and beat would be a 403, for ever.
                self.refused = LoginRefused(
                    f"{self.email} is not a worker node account (role {details['role']})"
                )
                raise self.refused
            token = self.keep(path="/api/auth/login", payload=payload)
            log("logged_in", email=self.email, node=details.get("id"))
            return token

    def try_once(self, path: str, body: dict):
        """(status, JSON body) of one POST to an auth endpoint; TokenUnavailable when it
        may succeed later (a lost connection, a retryable status)."""
        try:
            status, headers, payload = self.send("POST", path, body)
        except OSError as error:
            raise TokenUnavailable(None, {}, f"{path}: {error}") from error
        payload = payload if isinstance(payload, dict) else {}
        if status in RETRYABLE:
            error = TokenUnavailable(status, headers, f"{path}: {payload.get('message')}")
            hinted = retry_after(headers) if status == 429 else None
            if hinted:
                self.token_not_before = time.monotonic() + min(hinted, MAX_RETRY_AFTER)
                self.token_unavailable = error
            raise error
        return status, payload

    def keep(self, path: str, payload: dict) -> str:
        """Keep the tokens of a 200 from `path`. A 200 without them (a proxy's or captive
        portal's page, say) is TokenUnavailable, tried again later as an outage is."""
        try:
            access, refresh = payload["token"], payload["refresh"]
            claims = jwt_claims(access)
            lifetime = claims["exp"] - claims["iat"]
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise TokenUnavailable(None, {}, f"{path}: 200 without a token") from error
        self.access, self.refresh_token = access, refresh
        # By our clock; the fifth left covers a skew of that much with the server's.
        self.access_expires = claims["exp"] - lifetime / 5
        return self.access


def retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers else None
    return float(value) if value and value.isdigit() else None


def jwt_claims(token: str) -> dict:
    """The token's payload, read (not verified: the server does that) for its expiry."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
