"""The ``newsdigest`` command: a thin layer over the same functions the API calls."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from schemas import PreparedArticle
from service import metrics
from service.article_files import load_article
from service.errors import InputError, LLMError, NewsdigestError
from service.llm.client import LLMClient
from service.llm.factory import open_llm
from service.logs import configure_logging
from service.pipeline import render
from service.pipeline.extract import extract_article
from service.pipeline.story import StoryOptions, digest_story, prepare_all
from service.pipeline.text import prepare
from service.prompts import LOCK_FILE, PromptRegistry
from service.settings import Settings

app = typer.Typer(help="Verified facts, sentiment and one cited digest per news story.", no_args_is_help=True)
prompts_app = typer.Typer(help="Versioned prompts.", no_args_is_help=True)
local_app = typer.Typer(help="The embedded local model server.", no_args_is_help=True)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")
app.add_typer(local_app, name="local-llm")
app.add_typer(db_app, name="db")

out = Console()
# soft_wrap: an error stays one line whatever the terminal width, so scripts can read it.
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")

Files = Annotated[list[Path], typer.Argument(help="Article files: .txt (first line the title), .html or .json.")]
Pins = Annotated[list[str] | None, typer.Option("--prompt", help="Pin a prompt version, e.g. key_facts@1.")]


class ArticleFormat(StrEnum):
    json = "json"
    md = "md"


class DigestFormat(StrEnum):
    json = "json"
    md = "md"
    html = "html"


def _exit_code(exc: NewsdigestError) -> int:
    if isinstance(exc, InputError):
        return 2
    if isinstance(exc, LLMError):
        return 3
    return 4


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's work; our errors become one line on stderr and an exit code."""
    try:
        return asyncio.run(coro)
    except NewsdigestError as exc:
        err.print(f"[red]error:[/red] {exc.detail}", highlight=False, markup=True)
        raise typer.Exit(_exit_code(exc)) from None


def _settings() -> Settings:
    try:
        settings = Settings()
    except ValueError as exc:
        err.print(f"[red]error:[/red] invalid settings: {exc}")
        raise typer.Exit(4) from None
    configure_logging(settings)  # logs go to stderr, so `--format json` output stays parseable
    return settings


@asynccontextmanager
async def _llm(settings: Settings) -> AsyncIterator[LLMClient]:
    if settings.uses_local_llm:
        from service.llm import local as local_llm

        if not local_llm.status(settings).running:
            err.print("No LLM endpoint configured: starting the embedded local model (first time: minutes)…")
            await asyncio.to_thread(local_llm.start, settings)
    async with open_llm(settings, shared_window=False) as client:
        yield client


def _emit(text: str, out_file: Path | None) -> None:
    if out_file:
        out_file.write_text(text, encoding="utf-8")
        err.print(f"wrote {out_file}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command()
def analyze(files: Files, format: ArticleFormat = ArticleFormat.md, prompt: Pins = None) -> None:
    """Key facts and sentiment of each article, each fact with its exact sentences."""
    settings = _settings()

    async def work() -> list[str]:
        registry = PromptRegistry.load(settings.prompts_dir, settings.prompt_versions)
        prompts = registry.resolve(prompt)
        prepared: list[PreparedArticle] = [
            prepare(load_article(f), max_chars=settings.max_article_chars) for f in files
        ]
        rendered = []
        async with _llm(settings) as llm:
            with Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True
            ) as progress:
                for item in prepared:
                    task = progress.add_task(f"analysing {item.outlet}: {item.title[:60]}")
                    extraction = await extract_article(item, prompts, llm, sequential=settings.uses_local_llm,
                                                       section_chars=settings.article_section_chars)
                    metrics.record_outcomes(extraction.provenance.values())
                    progress.remove_task(task)
                    rendered.append(
                        extraction.model_dump_json(indent=2)
                        if format is ArticleFormat.json
                        else render.extraction_markdown(extraction)
                    )
        return rendered

    results = _run(work())
    if format is ArticleFormat.json and len(results) > 1:
        _emit("[\n" + ",\n".join(results) + "\n]", None)
    else:
        _emit("\n\n".join(results), None)


@app.command()
def digest(
    files: Files,
    format: DigestFormat = DigestFormat.md,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write to this file.")] = None,
    prompt: Pins = None,
    story: Annotated[str | None, typer.Option(help="Story id to record.")] = None,
) -> None:
    """One cited digest of a story from its articles."""
    settings = _settings()

    async def work() -> str:
        registry = PromptRegistry.load(settings.prompts_dir, settings.prompt_versions)
        prompts = registry.resolve(prompt)
        ready, failed = prepare_all([load_article(f) for f in files], max_chars=settings.max_article_chars)
        options = StoryOptions(sequential=settings.uses_local_llm, section_chars=settings.article_section_chars,
                               language=settings.digest_language, story_id=story)
        async with _llm(settings) as llm:
            with Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True
            ) as progress:
                task = progress.add_task(f"analysing {len(ready)} articles", total=len(ready) + 1)

                def step(stage: str, item: PreparedArticle | None) -> None:
                    label = f"analysed {item.outlet}" if item else "writing the digest"
                    progress.update(task, advance=1 if item else 0, description=label)

                result = await digest_story(ready, prompts, llm, options, failed=failed, on_progress=step)
        metrics.record_outcomes([result.provenance] if result.provenance else [])
        if format is DigestFormat.json:
            return render.digest_json(result)
        return render.digest_html(result) if format is DigestFormat.html else render.digest_markdown(result)

    _emit(_run(work()), out_file)


@app.command("eval")
def eval_command(
    stories: Annotated[list[Path] | None, typer.Argument(
        help="Gold story folders (default: every evals/*/ with a gold.yaml).")] = None,
    prompt: Pins = None,
    compare: Annotated[list[str] | None, typer.Option(
        "--compare", help="Another variant to score beside the active prompts: 'digest@2,key_facts@2' or "
        "'model=NAME' (repeatable).")] = None,
    replay: Annotated[bool, typer.Option(
        help="Replay the embedded model's recordings (offline, deterministic) instead of calling a model.")] = False,
    out_file: Annotated[Path, typer.Option("--out", help="Where the scores go as JSON.")] = Path(
        "benchmarks/results/eval.json"),
) -> None:
    """Score digests against gold annotations: central facts, outlets, disagreements, faithfulness, cost."""
    from service.quality import report
    from service.quality.gold import stories as gold_stories

    settings = _settings()
    root = settings.prompts_dir.parent
    folders = stories or gold_stories(root / "evals")
    if not folders:
        err.print(f"[red]error:[/red] no gold story under {root / 'evals'}")
        raise typer.Exit(2)
    variants = [report.Variant(label="active" + (f" ({', '.join(prompt)})" if prompt else ""), pins=prompt or [])]
    variants += [report.Variant.parse(spec) for spec in compare or []]

    async def work() -> dict[str, dict[str, report.StoryScore]]:
        registry = PromptRegistry.load(settings.prompts_dir, settings.prompt_versions)
        options = StoryOptions(sequential=settings.uses_local_llm, section_chars=settings.article_section_chars,
                               language=settings.digest_language)
        results = {}
        for variant in variants:
            chosen = settings.model_copy(update={"llm_model": variant.model}) if variant.model else settings
            client = open_llm(chosen, shared_window=False) if replay else _llm(chosen)
            async with client as llm:
                results[variant.label] = await report.run_variant(
                    folders, variant, registry, llm, options, max_chars=settings.max_article_chars,
                    cassette_dir=root / "cassettes", replay=replay)
        return results

    results = _run(work())
    out.print(report.table(results))
    report.write(out_file, results, model=settings.effective_model, mode=settings.effective_mode)
    err.print(f"wrote {out_file}")


@prompts_app.command("list")
def prompts_list() -> None:
    """Every prompt version, its hash and which one is active."""
    settings = _settings()
    registry = PromptRegistry.load(settings.prompts_dir, settings.prompt_versions, strict=False)
    table = Table("prompt", "version", "active", "sha256", "schema", "description")
    for p in registry.all():
        active = "yes" if registry.active.get(p.meta.name) == p.meta.version else ""
        table.add_row(p.meta.name, str(p.meta.version), active, p.sha256[:12], p.meta.schema_path, p.meta.description)
    out.print(table)


@prompts_app.command("check")
def prompts_check() -> None:
    """Fail when a published prompt changed or a version is not locked."""
    settings = _settings()
    problems = PromptRegistry.load(settings.prompts_dir, strict=False).problems()
    for problem in problems:
        err.print(f"[red]error:[/red] {problem}")
    if problems:
        raise typer.Exit(1)
    out.print("prompts match prompts.lock")


@prompts_app.command("lock")
def prompts_lock() -> None:
    """Add new prompt versions to prompts.lock; published entries are never rewritten."""
    settings = _settings()
    registry = PromptRegistry.load(settings.prompts_dir, strict=False)
    changed = [p for p in registry.problems() if "changed after" in p]
    if changed:
        for problem in changed:
            err.print(f"[red]error:[/red] {problem}")
        raise typer.Exit(1)
    (settings.prompts_dir / LOCK_FILE).write_text(registry.lock_text())
    out.print(f"locked {len(registry.all())} prompt versions")


@local_app.command("start")
def local_start() -> None:
    """Assemble and check the embedded model, then serve it on 127.0.0.1."""
    from service.llm import local as local_llm

    settings = _settings()
    try:
        pid = local_llm.start(settings)
    except NewsdigestError as exc:
        err.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(_exit_code(exc)) from None
    out.print(f"embedded model serving at {settings.effective_base_url} (pid {pid})")


@local_app.command("stop")
def local_stop() -> None:
    """Stop the embedded model server."""
    from service.llm import local as local_llm

    stopped = local_llm.stop(_settings())
    out.print("stopped" if stopped else "not running")


@local_app.command("status")
def local_status() -> None:
    """Whether the embedded model server runs, and where."""
    from service.llm import local as local_llm

    state = local_llm.status(_settings())
    out.print_json(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(state).items()}))
    if not state.running:
        raise typer.Exit(1)


@app.command()
def serve(host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
          worker: Annotated[bool, typer.Option("--worker/--no-worker", help="Run jobs in this process too.")] = True,
          ) -> None:
    """The HTTP API (OpenAPI at /docs), with the job worker unless --no-worker."""
    import uvicorn

    from service.api import create_app

    settings = _settings()
    if not worker:
        settings = settings.model_copy(update={"run_worker": False})
    _run(_check_database(settings))
    # No access log: the API logs each request itself, by route and without the query string.
    uvicorn.run(create_app(settings), host=host, port=port, access_log=False, log_level=settings.log_level,
                timeout_graceful_shutdown=int(settings.worker_shutdown_grace_s) + 5)


@app.command("worker")
def worker_command(
    queue: Annotated[list[str] | None, typer.Option(
        "--queue", help="procrastinate backend: take only this job kind (repeatable), e.g. send_callback.")] = None,
    concurrency: Annotated[int | None, typer.Option(
        min=1, help="Jobs this process runs at once (default NEWSDIGEST_WORKER_CONCURRENCY).")] = None,
) -> None:
    """Run queued jobs (analyses, digests) until Ctrl-C or SIGTERM; start as many as you need."""
    settings = _settings()
    if concurrency is not None:
        settings = settings.model_copy(update={"worker_concurrency": concurrency})
    if settings.job_backend == "procrastinate":
        try:
            from service.jobs.engine import serve_engine_worker
        except ImportError as exc:
            err.print(f"[red]error:[/red] NEWSDIGEST_JOB_BACKEND=procrastinate needs the scale extra "
                      f"(pip install 'newsdigest[scale]'): {exc}")
            raise typer.Exit(4) from None
        _run(serve_engine_worker(settings, queues=queue or None))
        return
    if queue:
        err.print("[red]error:[/red] --queue needs NEWSDIGEST_JOB_BACKEND=procrastinate")
        raise typer.Exit(4)
    from service.jobs.runtime import serve_worker

    _run(serve_worker(settings))


async def _check_database(settings: Settings) -> None:
    """Refuse to start on a database behind the code, with one line naming `newsdigest db upgrade`."""
    if settings.migrate_on_start:
        return
    from service.store import db

    engine = db.make_engine(settings.database_url)
    try:
        await db.check_migrated(engine)
    finally:
        await engine.dispose()


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Alembic revision.")] = "head") -> None:
    """Migrate the database (NEWSDIGEST_DATABASE_URL) to this version's schema."""
    from service.store import db

    settings = _settings()
    db.upgrade(settings.database_url, revision)
    out.print(f"database at {revision}: {db.async_url(settings.database_url).render_as_string(hide_password=True)}")
