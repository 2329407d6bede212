"""Where the CLI finds the gateway and the credential it sends.

The credentials file (`$BUGAGARIC_CONFIG_DIR/credentials.json`, else `~/.config/bugagaric/credentials.json`) holds
the gateway URL and a login token or an API key, readable by its owner only (0600, in a 0700 directory).
Environment variables win over it: `BUGAGARIC_URL` names the gateway, `BUGAGARIC_API_KEY` is sent as the bearer
credential. A saved credential is only ever sent to the URL it was saved for.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cli.errors import EXIT_REFUSED, EXIT_UNAUTHENTICATED, EXIT_UNREACHABLE, CliError

DEFAULT_URL = "http://127.0.0.1:18080"
CONFIG_DIR_ENV = "BUGAGARIC_CONFIG_DIR"
URL_ENV = "BUGAGARIC_URL"
API_KEY_ENV = "BUGAGARIC_API_KEY"
CREDENTIALS_FILE = "credentials.json"


@dataclass(frozen=True)
class Saved:
    url: str
    token: str
    kind: str  # "token" (from a password login) or "api_key"
    username: str | None = None
    expires_at: str | None = None


@dataclass(frozen=True)
class Connection:
    url: str
    token: str | None


def config_dir() -> Path:
    configured = os.environ.get(CONFIG_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".config" / "bugagaric"


def credentials_path() -> Path:
    return config_dir() / CREDENTIALS_FILE


def normalize_url(url: str) -> str:
    """`http(s)://host[:port][/prefix]` without a trailing slash; anything else is refused before a request."""
    text = url.strip().rstrip("/")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise CliError(f"bad gateway URL {url!r}: {exc}", EXIT_UNREACHABLE, "url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"bad gateway URL {url!r}: expected http://host:port or https://host", EXIT_UNREACHABLE, "url")
    return text


def load() -> Saved | None:
    path = credentials_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Saved(url=data["url"], token=data["token"], kind=data.get("kind", "token"),
                     username=data.get("username"), expires_at=data.get("expires_at"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CliError(f"unreadable credentials file {path}: {exc}; run `bugagaric login` again", EXIT_REFUSED) from None


def save(saved: Saved) -> Path:
    """Written to a temporary file created 0600, then renamed over the old one: never readable by others, even
    for a moment, and never half-written."""
    path = credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{CREDENTIALS_FILE}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"url": saved.url, "token": saved.token, "kind": saved.kind, "username": saved.username,
                   "expires_at": saved.expires_at}, out, indent=2)
    os.chmod(temporary, 0o600)  # in case the file existed already with a wider mode
    os.replace(temporary, path)
    return path


def forget() -> bool:
    try:
        credentials_path().unlink()
    except FileNotFoundError:
        return False
    return True


def gateway_url(override: str | None = None) -> str:
    """The URL given, else BUGAGARIC_URL, else the saved one, else the default."""
    if override:
        return normalize_url(override)
    if os.environ.get(URL_ENV):
        return normalize_url(os.environ[URL_ENV])
    saved = load()
    return normalize_url(saved.url) if saved else DEFAULT_URL


def connection(require_credential: bool = True) -> Connection:
    url = gateway_url()
    token = os.environ.get(API_KEY_ENV) or None
    if token is None:
        saved = load()
        if saved and normalize_url(saved.url) == url:
            token = saved.token
    if token is None and require_credential:
        raise CliError(f"not logged in to {url}: run `bugagaric login`, or set {API_KEY_ENV}", EXIT_UNAUTHENTICATED)
    return Connection(url, token)
