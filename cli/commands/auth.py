"""`login` and `logout`: a password login's token, or an API key, saved for the next commands."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from cli import credentials, output
from cli.api import LOGIN_PATH, Api
from cli.credentials import API_KEY_ENV, URL_ENV, Connection, Saved
from cli.errors import EXIT_REFUSED, CliError


def _password() -> str:
    """Prompted without echo at a terminal; read as one line from stdin otherwise (`echo "$PW" | bugagaric login`),
    so a script never puts it on the command line."""
    if sys.stdin.isatty():
        return typer.prompt("Password", hide_input=True)
    line = sys.stdin.readline()
    if not line:
        raise CliError("no password: type it at the prompt, or pipe it on stdin", EXIT_REFUSED, "password")
    return line.rstrip("\r\n")


def login(
    url: Annotated[Optional[str], typer.Option(help=f"the gateway (default: ${URL_ENV}, the saved one, or "
                                                    f"{credentials.DEFAULT_URL})")] = None,
    username: Annotated[Optional[str], typer.Option(help="prompted when not given")] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", help="save this API key instead of logging in with a password (or set "
                                                   f"{API_KEY_ENV}: every command then sends it, no login needed)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Log in (the password is prompted, or read from stdin) or check an API key, and save the credential."""
    gateway = credentials.gateway_url(url)
    if api_key:
        with Api(Connection(gateway, api_key)) as api:
            me = api.get("/api/auth/me")  # a key that does not work is refused here, not at the next command
        saved = Saved(url=gateway, token=api_key, kind="api_key", username=me.get("username"))
    else:
        if not username:
            if not sys.stdin.isatty():
                raise CliError("--username is needed when the password comes from stdin", EXIT_REFUSED, "username")
            username = typer.prompt("Username")
        password = _password()
        with Api(Connection(gateway, None)) as api:
            answer = api.post(LOGIN_PATH, json={"username": username, "password": password})
        saved = Saved(url=gateway, token=answer["token"], kind="token", username=username,
                      expires_at=answer.get("expires_at"))
    path = credentials.save(saved)
    result = {"url": gateway, "username": saved.username, "kind": saved.kind, "expires_at": saved.expires_at,
              "credentials_file": str(path)}
    if json_output:
        output.emit_json(result)
    else:
        until = f" until {saved.expires_at}" if saved.expires_at else ""
        output.say(f"logged in to {gateway} as {saved.username}{until} (saved in {path})")


def logout(json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False) -> None:
    """Revoke the saved login token on the gateway and forget it (a saved API key is only forgotten: revoke it with
    the API or the console)."""
    saved = credentials.load()
    revoked = False
    if saved and saved.kind == "token":
        try:
            with Api(Connection(credentials.normalize_url(saved.url), saved.token)) as api:
                api.post("/api/auth/logout")
            revoked = True
        except CliError as exc:  # an expired token or a gone gateway: forgetting it locally is still what was asked
            output.note(f"the gateway did not revoke the token: {exc.one_line()}")
    forgotten = credentials.forget()
    if json_output:
        output.emit_json({"logged_out": forgotten, "revoked": revoked})
    else:
        output.say("logged out" if forgotten else "not logged in")
