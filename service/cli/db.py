"""``newsdigest db``: the database's schema, migrated by hand or checked before a process starts."""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli.console import out
from service.cli.startup import load_settings
from service.settings import Settings

app = typer.Typer(help="The database.", no_args_is_help=True)


async def check_database(settings: Settings) -> None:
    """Refuse to start on a database behind the code, with one line naming `newsdigest db upgrade`."""
    if settings.migrate_on_start:
        return
    from service.store import db

    engine = db.make_engine(settings.database_url)
    try:
        await db.check_migrated(engine)
    finally:
        await engine.dispose()


@app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Alembic revision.")] = "head") -> None:
    """Migrate the database (NEWSDIGEST_DATABASE_URL) to this version's schema."""
    from service.store import db

    settings = load_settings()
    db.upgrade(settings.database_url, revision)
    out.print(f"database at {revision}: {db.async_url(settings.database_url).render_as_string(hide_password=True)}")
