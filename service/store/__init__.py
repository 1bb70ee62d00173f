"""Persistence: SQLAlchemy 2 (async) over SQLite or PostgreSQL, one code path for both.

One module per noun (``articles``, ``extractions``, ``digests``, ``jobs``, ``webhooks``,
``idempotency``, ``llm_calls``), each with keyword-only async functions that take the session
explicitly and return schemas or frozen records, never rows. Functions flush but never commit:
the caller's transaction decides what is stored together. ``db`` builds engines and sessions
and runs the Alembic migrations in ``service/migrations``.
"""
