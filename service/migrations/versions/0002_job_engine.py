"""job engine (PostgreSQL only): procrastinate's schema, the dispatch trigger on jobs, the LLM rate window

Revision ID: 0002_job_engine
Revises: 0001_initial
Create Date: 2025-11-24

What ``NEWSDIGEST_JOB_BACKEND=procrastinate`` and the shared LLM rate limit need, created by the
same ``newsdigest db upgrade`` as everything else. On SQLite this revision does nothing: the
in-process backend needs none of it.

Both schemas sit next to newsdigest's tables (``schema_names``: ``procrastinate`` and
``coordination`` when those are in ``public``).

- Schema ``procrastinate``: procrastinate 3.10.0's own schema, applied from the copy next to these
  revisions (``service/migrations/procrastinate/schema-3.10.0.sql``), never from the installed
  package, so this revision creates the same objects whatever procrastinate is installed later.
  Its functions get a fixed ``search_path``, so our trigger can call them from any session. A
  procrastinate release that changes the schema ships files in ``procrastinate/sql/migrations/``:
  a later revision applies those in this schema and repeats the ``search_path`` step.
- Schema ``coordination`` (ours): ``job_dispatch``, whose row ``procrastinate`` is written by the
  first engine worker and switches dispatching on; ``llm_rate_window``, the rolling window of
  model calls that every worker's rate limiter shares (``service/ratelimit.py``).
- Triggers on ``jobs``: a row that becomes ``queued`` (enqueued, retried, requeued after a crash)
  defers one procrastinate job ``newsdigest.run_job(job_id)`` in the same transaction, queue = the
  job's kind, not before ``run_after``, and refreshes of one story share the lock ``story:<id>``.
  So every path that queues a job is covered without knowing about the engine.

Revisions are only ever added.
"""

from collections.abc import Iterator, Sequence
from pathlib import Path

from alembic import op

revision: str = "0002_job_engine"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PROCRASTINATE_SCHEMA = Path(__file__).resolve().parent.parent / "procrastinate" / "schema-3.10.0.sql"


def schema_names(app_schema: str) -> tuple[str, str]:
    """procrastinate's schema and ours, next to the schema holding newsdigest's tables.

    ``public`` (the usual case) gives ``procrastinate`` and ``coordination``; newsdigest living in
    schema ``X`` of a shared database gives ``X_procrastinate`` and ``X_coordination``, so two
    installations (or two test runs) in one database never share an engine. The same rule is in
    ``service.store.engine_jobs.schema_names``, which finds these objects at run time.
    """
    if app_schema == "public":
        return "procrastinate", "coordination"
    return f"{app_schema}_procrastinate", f"{app_schema}_coordination"


COORDINATION = [
    'CREATE SCHEMA "{c}"',
    """CREATE TABLE "{c}".job_dispatch (
        engine varchar(32) PRIMARY KEY,
        enabled_at timestamptz NOT NULL DEFAULT now()
    )""",
    # UNLOGGED: rate-limit history is worth nothing after a server crash, so it skips the WAL.
    """CREATE UNLOGGED TABLE "{c}".llm_rate_window (
        id bigserial PRIMARY KEY,
        at timestamptz NOT NULL,
        tokens integer NOT NULL
    )""",
    'CREATE INDEX ix_llm_rate_window_at ON "{c}".llm_rate_window (at)',
    # One procrastinate job for one queued row: the engine worker runs ``newsdigest.run_job(job_id)``.
    """CREATE FUNCTION "{c}".defer_job(job jobs) RETURNS bigint LANGUAGE sql AS $$
        SELECT ("{p}".procrastinate_defer_jobs_v1(ARRAY[ROW(
            job.kind,
            'newsdigest.run_job',
            0,
            CASE WHEN job.kind = 'refresh_story' AND job.payload ->> 'story_id' IS NOT NULL
                 THEN 'story:' || (job.payload ->> 'story_id') END,
            NULL,
            jsonb_build_object('job_id', job.id),
            job.run_after
        )::"{p}".procrastinate_job_to_defer_v1]))[1]
    $$""",
    """CREATE FUNCTION "{c}".dispatch_job() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM "{c}".job_dispatch WHERE engine = 'procrastinate') THEN
            PERFORM "{c}".defer_job(NEW);
        END IF;
        RETURN NULL;
    END;
    $$""",
    """CREATE TRIGGER jobs_dispatch_insert AFTER INSERT ON jobs
        FOR EACH ROW WHEN (NEW.status = 'queued') EXECUTE FUNCTION "{c}".dispatch_job()""",
    """CREATE TRIGGER jobs_dispatch_requeue AFTER UPDATE OF status ON jobs
        FOR EACH ROW WHEN (NEW.status = 'queued' AND OLD.status <> 'queued')
        EXECUTE FUNCTION "{c}".dispatch_job()""",
]

# Every function procrastinate created resolves its tables in its own schema, whoever calls it.
PIN_SEARCH_PATH = """
DO $$
DECLARE fn regprocedure;
BEGIN
    FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = '{p}'
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_catalog', fn, '{p}');
    END LOOP;
END;
$$"""


def statements(sql: str) -> Iterator[str]:
    """Split a SQL script on the semicolons that end a line outside ``$$`` bodies."""
    current: list[str] = []
    quoted = False
    for line in sql.splitlines():
        current.append(line)
        quoted ^= line.count("$$") % 2 == 1
        if not quoted and line.rstrip().endswith(";"):
            statement = "\n".join(current).strip().rstrip(";").strip()
            if any(part.strip() and not part.strip().startswith("--") for part in statement.splitlines()):
                yield statement
            current = []
    rest = "\n".join(current).strip()
    if any(part.strip() and not part.strip().startswith("--") for part in rest.splitlines()):
        yield rest


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    app_schema = bind.exec_driver_sql("SELECT current_schema()").scalar_one()
    p, c = schema_names(app_schema)
    bind.exec_driver_sql(f'CREATE SCHEMA "{p}"')
    previous = bind.exec_driver_sql("SELECT current_setting('search_path')").scalar_one()
    bind.exec_driver_sql(f'SET search_path TO "{p}"')
    try:
        for statement in statements(PROCRASTINATE_SCHEMA.read_text(encoding="utf-8")):
            bind.exec_driver_sql(statement)
    finally:
        bind.exec_driver_sql(f"SET search_path TO {previous}")
    bind.exec_driver_sql(PIN_SEARCH_PATH.format(p=p))
    for statement in COORDINATION:
        bind.exec_driver_sql(statement.format(p=p, c=c))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    p, c = schema_names(bind.exec_driver_sql("SELECT current_schema()").scalar_one())
    bind.exec_driver_sql("DROP TRIGGER IF EXISTS jobs_dispatch_requeue ON jobs")
    bind.exec_driver_sql("DROP TRIGGER IF EXISTS jobs_dispatch_insert ON jobs")
    bind.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{c}" CASCADE')
    bind.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{p}" CASCADE')
