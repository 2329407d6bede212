"""The `bugagaric` command: the command groups assembled, and expected failures turned into one line on stderr
with the exit codes of cli.errors (no tracebacks)."""

from __future__ import annotations

import sys
from typing import Any

import typer

from cli import output
from cli.commands import artifacts, auth, datasets, tasks
from cli.errors import CliError


class BugagaricApp(typer.Typer):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except CliError as exc:
            output.print_error(exc.one_line())
            sys.exit(exc.exit_code)


app = BugagaricApp(
    name="bugagaric",
    help="BugAgaric Finetune from the command line, through the gateway's REST API. Exit codes: 0 ok (a followed "
    "task succeeded), 1 a followed task failed, 2 it was stopped (or a usage error), 3 the gateway refused the "
    "request or a local file is bad, 4 the gateway cannot be reached, 5 not logged in or the credential was refused.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command()(auth.login)
app.command()(auth.logout)
app.command()(tasks.submit)
app.command("ls")(tasks.ls)
app.command()(tasks.get)
app.command()(tasks.logs)
app.command()(tasks.stop)
app.command()(tasks.resume)
app.command("rm")(tasks.rm)
app.command()(tasks.export)
app.add_typer(datasets.app, name="datasets")
app.add_typer(artifacts.app, name="artifacts")
