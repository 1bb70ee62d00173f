"""The ``newsdigest`` command: a thin layer over the same functions the API calls."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from enum import StrEnum
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, TypeVar

import trafilatura
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from schemas import ArticleIn, PreparedArticle
from service import metrics, tracing
from service.article_files import decode, load_article
from service.errors import InputError, LLMError, NewsdigestError, validation_errors
from service.llm.client import LLMClient
from service.llm.factory import open_llm
from service.logs import configure_logging
from service.pipeline import render
from service.pipeline.extract import extract_article
from service.pipeline.story import StoryOptions, digest_story, prepare_all
from service.pipeline.text import prepare
from service.prompts import LOCK_FILE, PromptRegistry
from service.settings import Settings, settings_error

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

Files = Annotated[list[Path], typer.Argument(
    help="Article files: .txt (first line the title), .html or .json (an ArticleIn); - reads one article from "
    "standard input (JSON if it starts with {, HTML if with <, else text with the title first).")]
Pins = Annotated[list[str] | None, typer.Option("--prompt", help="Pin a prompt version, e.g. key_facts@1.")]
Model = Annotated[str | None, typer.Option(
    "--model", help="Model name sent with each call; overrides NEWSDIGEST_LLM_MODEL.")]
STDIN = Path("-")


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
        err.print(f"[red]error:[/red] {escape(exc.detail)}", highlight=False, markup=True)
        raise typer.Exit(_exit_code(exc)) from None


def _fail(message: str, code: int) -> typer.Exit:
    """Print one error line; the caller raises what this returns."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, markup=True)
    return typer.Exit(code)


def _settings(*, model: str | None = None) -> Settings:
    try:
        settings = Settings()
    except ValueError as exc:  # pydantic's ValidationError and pydantic-settings' SettingsError
        raise _fail(f"invalid settings: {settings_error(exc)}", 4) from None
    if model:
        settings = settings.model_copy(update={"llm_model": model})
    configure_logging(settings)  # logs go to stderr, so `--format json` output stays parseable
    tracing.configure(settings)
    return settings


@asynccontextmanager
async def _llm(settings: Settings) -> AsyncIterator[LLMClient]:
    if settings.uses_local_llm:
        from service.llm import local as local_llm

        if not local_llm.status(settings).running:
            err.print("No LLM endpoint or key configured: starting the embedded local model "
                      "(the first time takes minutes; set OPENAI_API_KEY or NEWSDIGEST_LLM_BASE_URL to use another)…")
            await asyncio.to_thread(local_llm.start, settings)
    async with open_llm(settings, shared_window=False) as client:
        yield client


def _check_out_file(out_file: Path | None) -> None:
    """Refuse an --out the result could not be written to, before any model call is paid for."""
    if out_file is None:
        return
    parent = out_file.parent
    if not parent.is_dir():
        raise _fail(f"--out {out_file}: directory {parent} does not exist", 2)
    if out_file.is_dir():
        raise _fail(f"--out {out_file}: is a directory", 2)
    if not os.access(parent, os.W_OK) or (out_file.exists() and not os.access(out_file, os.W_OK)):
        raise _fail(f"--out {out_file}: not writable", 2)


def _emit(text: str, out_file: Path | None) -> None:
    if out_file:
        try:
            out_file.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise _fail(f"--out {out_file}: cannot write ({exc.strerror})", 2) from None
        err.print(f"wrote {out_file}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _invalid(name: str, exc: ValidationError) -> InputError:
    first = validation_errors(exc)[0]
    where = ".".join(str(part) for part in first["loc"])
    return InputError(f"{name}: invalid article: {where + ': ' if where else ''}{first['msg']}")


def _article_json(name: str, text: str) -> ArticleIn:
    try:
        json.loads(text)
    except ValueError as exc:
        line, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)
        at = f" at line {line}, column {column}" if line is not None else ""
        raise InputError(f"{name}: not valid JSON{at}: {getattr(exc, 'msg', str(exc))}") from None
    try:
        return ArticleIn.model_validate_json(text)
    except ValidationError as exc:
        raise _invalid(name, exc) from None


def _article_from_stdin() -> ArticleIn:
    """One article read from standard input: JSON (an ArticleIn), HTML, or text with the title first."""
    name = "<stdin>"
    text = decode(sys.stdin.buffer.read(), name)
    start = text.lstrip()[:1]
    try:
        if start == "{":
            return _article_json(name, text)
        if start == "<":
            meta = trafilatura.extract_metadata(text)
            return ArticleIn(outlet=(meta.sitename if meta and meta.sitename else "stdin"),
                             title=(meta.title if meta and meta.title else ""), body=text, content_type="html",
                             url=meta.url if meta else None)
        title, _, body = text.partition("\n")
        return ArticleIn(outlet="stdin", title=title.strip(), body=body)
    except ValidationError as exc:
        raise _invalid(name, exc) from None


def _load(path: Path) -> ArticleIn:
    """An article from a file or, for ``-``, from standard input; every error names where it came from."""
    if path == STDIN:
        return _article_from_stdin()
    if path.suffix.lower() == ".json":
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
        return _article_json(str(path), decode(data, str(path)))
    return load_article(path)


def _load_all(files: list[Path]) -> list[tuple[str, ArticleIn]]:
    if files.count(STDIN) > 1:
        raise InputError("- (standard input) can be given once: it holds one article")
    return [("<stdin>" if f == STDIN else str(f), _load(f)) for f in files]


def _prepare(name: str, article: ArticleIn, max_chars: int) -> PreparedArticle:
    try:
        return prepare(article, max_chars=max_chars)
    except InputError as exc:
        raise type(exc)(f"{name}: {exc.detail}", **exc.extra) from None


@app.command()
def analyze(
    files: Files,
    format: Annotated[ArticleFormat, typer.Option(
        help="md: readable Markdown; json: one Extraction object per article (a list for several).")
    ] = ArticleFormat.md,
    prompt: Pins = None,
    model: Model = None,
) -> None:
    """Key facts and sentiment of each article, each fact with its exact sentences."""
    settings = _settings(model=model)

    async def work() -> list[str]:
        registry = PromptRegistry.load(settings.prompts_dir, settings.prompt_versions)
        prompts = registry.resolve(prompt)
        prepared: list[PreparedArticle] = [
            _prepare(name, article, settings.max_article_chars) for name, article in _load_all(files)
        ]
        rendered = []
        async with _llm(settings) as llm:
            with Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True
            ) as progress:
                for item in prepared:
                    task = progress.add_task(f"analysing {item.outlet}: {item.title[:60]}")
                    extraction = await extract_article(item, prompts, llm, sequential=settings.runs_sequentially,
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
    format: Annotated[DigestFormat, typer.Option(
        help="md: Markdown with footnotes; json: the Digest object; html: the editor's page.")
    ] = DigestFormat.md,
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="Write to this file (its directory must exist) instead of standard output.")] = None,
    prompt: Pins = None,
    story: Annotated[str | None, typer.Option(help="Story id to record.")] = None,
    model: Model = None,
) -> None:
    """One cited digest of a story from its articles."""
    settings = _settings(model=model)
    _check_out_file(out_file)

    async def work() -> str:
        registry = PromptRegistry.load(settings.prompts_dir, settings.prompt_versions)
        prompts = registry.resolve(prompt)
        loaded = _load_all(files)
        for name, article in loaded:  # the digest goes on without them; say which file and why
            try:
                prepare(article, max_chars=settings.max_article_chars)
            except InputError as exc:
                err.print(f"[yellow]warning:[/yellow] {escape(name)}: {escape(exc.detail)}; left out of the digest",
                          highlight=False)
        ready, failed = prepare_all([article for _, article in loaded], max_chars=settings.max_article_chars)
        options = StoryOptions(sequential=settings.runs_sequentially, section_chars=settings.article_section_chars,
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
        options = StoryOptions(sequential=settings.runs_sequentially, section_chars=settings.article_section_chars,
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
        raise _fail(exc.detail, _exit_code(exc)) from None
    url = f"http://127.0.0.1:{settings.local_llm_port}/v1"
    out.print(f"embedded model serving at {url}" + (f" (pid {pid})" if pid else " (started by another checkout)"))


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
    from service.api.http import ProblemH11Protocol

    settings = _settings()
    if not worker:
        settings = settings.model_copy(update={"run_worker": False})
    _run(_check_database(settings))
    # No access log: the API logs each request itself, by route and without the query string.
    uvicorn.run(create_app(settings), host=host, port=port, access_log=False, http=ProblemH11Protocol,
                log_level=settings.log_level, timeout_graceful_shutdown=int(settings.worker_shutdown_grace_s) + 5)


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
    from service.jobs.runtime import metrics_endpoint, serve_worker

    if settings.job_backend == "procrastinate":
        try:
            from service.jobs.engine import serve_engine_worker
        except ImportError as exc:
            raise _fail(f"NEWSDIGEST_JOB_BACKEND=procrastinate needs the scale extra "
                        f"(pip install 'newsdigest[scale]'): {exc}", 4) from None
        with metrics_endpoint(settings):
            _run(serve_engine_worker(settings, queues=queue or None))
        return
    if queue:
        raise _fail("--queue needs NEWSDIGEST_JOB_BACKEND=procrastinate", 4)
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
