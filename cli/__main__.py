"""`python -m cli ...`: the same as the `bugagaric` console script."""

from cli.main import app

app(prog_name="bugagaric")
