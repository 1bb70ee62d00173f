"""``newsdigest prompts``: the versioned prompts, and the lock that keeps a published one from changing."""

from __future__ import annotations

import typer
from rich.table import Table

from service.cli.console import err, out
from service.cli.startup import load_settings
from service.prompts import LOCK_FILE, PromptRegistry

app = typer.Typer(help="Versioned prompts.", no_args_is_help=True)


@app.command("list")
def prompts_list() -> None:
    """Every prompt version, its hash and which one is active."""
    settings = load_settings()
    registry = PromptRegistry.load(settings.prompts_dir, settings.prompt_versions, strict=False)
    table = Table("prompt", "version", "active", "sha256", "schema", "description")
    for p in registry.all():
        active = "yes" if registry.active.get(p.meta.name) == p.meta.version else ""
        table.add_row(p.meta.name, str(p.meta.version), active, p.sha256[:12], p.meta.schema_path, p.meta.description)
    out.print(table)


@app.command("check")
def prompts_check() -> None:
    """Fail when a published prompt changed or a version is not locked."""
    settings = load_settings()
    problems = PromptRegistry.load(settings.prompts_dir, strict=False).problems()
    for problem in problems:
        err.print(f"[red]error:[/red] {problem}")
    if problems:
        raise typer.Exit(1)
    out.print("prompts match prompts.lock")


@app.command("lock")
def prompts_lock() -> None:
    """Add new prompt versions to prompts.lock; published entries are never rewritten."""
    settings = load_settings()
    registry = PromptRegistry.load(settings.prompts_dir, strict=False)
    changed = [p for p in registry.problems() if "changed after" in p]
    if changed:
        for problem in changed:
            err.print(f"[red]error:[/red] {problem}")
        raise typer.Exit(1)
    (settings.prompts_dir / LOCK_FILE).write_text(registry.lock_text())
    out.print(f"locked {len(registry.all())} prompt versions")
