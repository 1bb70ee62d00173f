"""The pipeline, one direction: text (prepare) -> extract (+ verify, repair, re-ask) -> align ->
digest -> render, with ``story`` running them for a set of articles.

Every module here is pure or takes its I/O injected: the model through ``service.llm.port``,
persistence through ``story.StoryStore``. None imports openai, SQLAlchemy, FastAPI or the settings,
and a test holds them to that.
"""
