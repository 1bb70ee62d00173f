"""The ``newsdigest`` command: a thin layer over the same functions the API calls.

One module per command or command group; ``startup`` (settings and model client), ``exit_codes``
(one error line and its exit code), ``console`` and ``output`` (where text goes) and
``article_input`` (files and standard input) serve them all.
"""

from __future__ import annotations

from importlib import metadata
from typing import Annotated

import typer

from service.cli import analyze, db, digest, evaluation, local_llm, prompts, serve, worker
from service.cli.console import out

__all__ = ["app", "main"]

app = typer.Typer(help="Verified facts, sentiment and one cited digest per news story.", no_args_is_help=True)
app.add_typer(prompts.app, name="prompts")
app.add_typer(local_llm.app, name="local-llm")
app.add_typer(db.app, name="db")


def _version(value: bool) -> None:
    if value:
        try:
            version = metadata.version("newsdigest")
        except metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        out.print(f"newsdigest {version}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Verified facts, sentiment and one cited digest per news story.

    Errors print one line and exit 2 (bad input), 3 (the model or its endpoint failed) or 4 (configuration).
    """


app.command()(analyze.analyze)
app.command()(digest.digest)
app.command("eval")(evaluation.eval_command)
app.command()(serve.serve)
app.command("worker")(worker.worker_command)
