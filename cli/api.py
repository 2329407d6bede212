"""The gateway's REST API over httpx: the bearer credential on every request, and every failure turned into a
CliError — the gateway's error JSON `{"error": {"code", "message", "field"}}` into its message and field, a
network failure into "cannot reach the gateway" — so no command ever shows a traceback for an expected failure."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import httpx

from cli.credentials import API_KEY_ENV, Connection, connection
from cli.errors import EXIT_REFUSED, EXIT_UNAUTHENTICATED, EXIT_UNREACHABLE, CliError

TIMEOUT_SECONDS = 60.0
USER_AGENT = "bugagaric-cli"
LOGIN_PATH = "/api/auth/login"


def error_from_response(response: httpx.Response) -> CliError:
    status = response.status_code
    exit_code = EXIT_UNAUTHENTICATED if status == 401 else EXIT_REFUSED
    try:
        error = response.json()["error"]
        message, field = str(error["message"]), error.get("field")
    except (ValueError, KeyError, TypeError):
        text = " ".join(response.text.split())[:200]
        return CliError(f"HTTP {status} from {response.request.url}: {text or response.reason_phrase}", exit_code)
    if status == 401 and not response.request.url.path.endswith(LOGIN_PATH):  # a refused password needs no hint to log in
        message += f" (run `bugagaric login`, or set {API_KEY_ENV})"
    return CliError(message, exit_code, field)


def error_from_transport(exc: httpx.HTTPError, url: str) -> CliError:
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return CliError(f"bad gateway URL {url!r}: {exc}", EXIT_UNREACHABLE, "url")
    if isinstance(exc, httpx.ConnectError):
        return CliError(f"cannot reach the gateway at {url}: {exc or 'connection failed'}", EXIT_UNREACHABLE)
    if isinstance(exc, httpx.TimeoutException):
        return CliError(f"the gateway at {url} did not answer in time ({type(exc).__name__})", EXIT_UNREACHABLE)
    return CliError(f"the connection to the gateway at {url} failed: {type(exc).__name__}: {exc}", EXIT_UNREACHABLE)


@contextmanager
def translated_errors(url: str) -> Iterator[None]:
    try:
        yield
    except httpx.HTTPError as exc:
        raise error_from_transport(exc, url) from None


def checked(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    response.read()
    raise error_from_response(response)


class Api:
    """One gateway, one credential. `Api.connect()` resolves both from the flags, environment and saved login."""

    def __init__(self, conn: Connection, timeout: float = TIMEOUT_SECONDS) -> None:
        self.url = conn.url
        self.headers = {"user-agent": USER_AGENT}
        if conn.token:
            self.headers["authorization"] = f"Bearer {conn.token}"
        self.timeout = timeout
        self._client = httpx.Client(base_url=conn.url, headers=self.headers, timeout=timeout)

    @classmethod
    def connect(cls, require_credential: bool = True) -> "Api":
        return cls(connection(require_credential))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "Api":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The answer's JSON; any error raised as CliError."""
        with translated_errors(self.url):
            return checked(self._client.request(method, path, **kwargs)).json()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A response whose body is read as it arrives (downloads); errors before and while reading are CliErrors."""
        with translated_errors(self.url), self._client.stream(method, path, **kwargs) as response:
            yield checked(response)

    def async_client(self, read_timeout: float | None = None) -> httpx.AsyncClient:
        """For the live streams (SSE): the same gateway and credential; `read_timeout` bounds a silent connection
        (the gateway pings every 15 s, so a longer silence means a dead one)."""
        timeout = httpx.Timeout(self.timeout, read=read_timeout)
        return httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=timeout)
