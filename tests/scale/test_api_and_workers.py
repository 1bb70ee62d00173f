"""``newsdigest serve --no-worker`` only enqueues; an engine worker on another process runs the job.

The API writes the job row as on any backend; the dispatch trigger hands it to procrastinate in
the same transaction, so the route needs no knowledge of the engine.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.databases import OWN_POSTGRES, only_on
from tests.fake_openai import FaultServer
from tests.processes import free_port, serve
from tests.scale.conftest import Workers, answering, article_in, first_line, worker_env

pytest.importorskip("procrastinate", reason="the scale extra is not installed: pip install -e '.[scale]'")
pytestmark = only_on(OWN_POSTGRES)
KEY = "scale-key"


def test_the_api_enqueues_and_a_separate_engine_worker_runs_the_job(
    database_url: str, fault_server: FaultServer, workers: Workers, tmp_path: Path
) -> None:
    stub = answering(fault_server, 0.2)
    env = worker_env(database_url, stub, api_keys=KEY)
    port = free_port()
    with serve(env, port, tmp_path / "serve.log", "--no-worker"):
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {KEY}"}
        posted = httpx.post(f"{base}/v1/articles", json=article_in(1).model_dump(mode="json"), headers=headers)
        assert posted.status_code == 202, posted.text
        job_id = posted.json()["job_id"]
        time.sleep(1.0)
        assert httpx.get(f"{base}/v1/jobs/{job_id}", headers=headers).json()["status"] == "queued"  # no worker yet

        workers.start(env)
        deadline = time.monotonic() + 30
        while (view := httpx.get(f"{base}/v1/jobs/{job_id}", headers=headers).json())["status"] not in (
                "succeeded", "failed"):
            assert time.monotonic() < deadline, f"{view}\n{workers.logs()}"
            time.sleep(0.2)
        assert view["status"] == "succeeded", workers.logs()
        assert stub.count("KeyFactsDraft", first_line(1)) == 1
        facts = httpx.get(f"{base}/v1/articles/{posted.json()['article_id']}", headers=headers).json()
        assert facts["facts"], facts
