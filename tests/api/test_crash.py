"""A real ``newsdigest serve`` killed with SIGKILL mid-job: after a restart every job finishes exactly once.

The first process runs two jobs at once while the model (the fault server) holds the first call for
30 s, so both jobs are ``running`` when the process dies. The second process finds their locks
stale, runs them again and then the rest, one job at a time so that each article's two answers
(key facts, then sentiment) arrive in the order they were scripted.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx

from tests.factories import analysis, facts_answer
from tests.fake_openai import FaultServer, delay
from tests.processes import free_port, serve

KEY = "crash-key"


def _article(n: int) -> dict[str, Any]:
    # The same first two sentences: every article takes the same answers, whatever order jobs run in.
    return {"id": f"crash-{n}", "story_id": "crash", "outlet": f"Outlet {n}", "title": f"Budget {n}",
            "body": "The council approved a budget of 12 million euros on Monday. "
                    f"The mayor said schools get most of the money. Reporter {n} filed this from the town hall."}


def _wait_until(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_jobs_interrupted_by_sigkill_finish_exactly_once_after_a_restart(tmp_path: Path,
                                                                          fault_server: FaultServer) -> None:
    database = tmp_path / "nd.db"
    log = tmp_path / "serve.log"
    env = {**os.environ, "NEWSDIGEST_DATABASE_URL": f"sqlite:///{database}", "NEWSDIGEST_API_KEYS": KEY,
           "NEWSDIGEST_LLM_BASE_URL": fault_server.base_url, "NEWSDIGEST_LLM_API_KEY": "fault-key",
           "NEWSDIGEST_LLM_MODE": "json_object", "NEWSDIGEST_LLM_MODEL": "test-model",
           "NEWSDIGEST_LLM_MAX_CONCURRENCY": "1", "NEWSDIGEST_LLM_TIMEOUT_S": "60",
           "NEWSDIGEST_WORKER_POLL_INTERVAL_S": "0.1", "NEWSDIGEST_JOB_LOCK_TIMEOUT_S": "2",
           "NEWSDIGEST_JOB_RETRY_INITIAL_WAIT_S": "0", "NEWSDIGEST_WORKER_CONCURRENCY": "2",
           "NEWSDIGEST_MIGRATE_ON_START": "true"}
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {KEY}"}
    answers = analysis(_article(1))
    assert facts_answer(_article(4)) == facts_answer(_article(1))
    fault_server.script([delay(30, answers[0])])  # the first call hangs until the process is dead

    with serve(env, port, log) as first:
        jobs = [httpx.post(f"{api}/v1/articles", json=_article(n), headers=headers).json()["job_id"]
                for n in range(1, 5)]

        def status() -> dict[str, str]:
            return {j: httpx.get(f"{api}/v1/jobs/{j}", headers=headers).json()["status"] for j in jobs}

        _wait_until(lambda: len(fault_server.completions) == 1 and list(status().values()).count("running") == 2,
                    "two running jobs with one model call in flight")
        interrupted = {j for j, s in status().items() if s == "running"}
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

    # One job at a time from now on, so each key-facts answer meets a key-facts request.
    fault_server.script(answers * 4)
    with serve({**env, "NEWSDIGEST_WORKER_CONCURRENCY": "1"}, port, log):
        _wait_until(lambda: all(httpx.get(f"{api}/v1/jobs/{j}", headers=headers).json()["status"] in
                                ("succeeded", "failed") for j in jobs), "every job to finish", timeout=60)
        views = [httpx.get(f"{api}/v1/jobs/{j}", headers=headers).json() for j in jobs]

    assert [v["status"] for v in views] == ["succeeded"] * 4, log.read_text()
    for view in views:
        assert view["attempts"] >= 2 if view["id"] in interrupted else view["attempts"] == 1, view
    with sqlite3.connect(database) as db:
        per_article = db.execute("SELECT article_id, count(*) FROM extractions GROUP BY article_id").fetchall()
        calls = db.execute("SELECT count(*) FROM llm_calls").fetchone()[0]
        statuses = db.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
    assert len(per_article) == 4 and all(count == 1 for _, count in per_article)
    assert calls == 8  # two per article: the killed call was never recorded, and nothing ran twice
    assert statuses == [("succeeded", 4)]
    assert len(fault_server.completions) == 9
