"""Health, readiness, metrics, prompts, the OpenAPI document and start-up checks."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from asgi_lifespan import LifespanManager

from service.api import create_app
from service.errors import ConfigError
from service.prompts import PromptRegistry
from service.settings import Settings
from tests.factories import analysis, article, facts_answer, neutral
from tests.fake_openai import FaultServer, closed_port_url, ok
from tests.running_app import Api, open_api


async def test_healthz_answers_without_a_key(api: Api) -> None:
    api.client.headers.pop("Authorization")

    response = await api.client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_checks_the_database_and_the_model_endpoint(api: Api) -> None:
    response = await api.client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "llm": "ok"}}
    models = [r for r in api.faults.requests if r.method == "GET"]
    assert models[-1].path == "/v1/models"
    assert models[-1].headers["authorization"] == "Bearer fault-key"


async def test_readyz_is_a_503_problem_when_the_model_endpoint_is_down(
        sqlite_url: str, settings_for: Callable[..., Settings], fault_server: FaultServer) -> None:
    async for api in open_api(settings_for(sqlite_url, llm_base_url=closed_port_url()), fault_server):
        response = await api.client.get("/readyz")

        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith("/not-ready")
        assert response.json()["checks"]["database"] == "ok"
        assert "model endpoint does not answer" in response.json()["checks"]["llm"]


async def test_metrics_count_requests_by_route_template_and_jobs(api: Api) -> None:
    payload = article(1)
    api.faults.script(analysis(payload))
    await api.client.post("/v1/articles", params={"wait": 10}, json=payload)
    await api.client.get("/v1/articles/cms-1")
    await api.client.get("/v1/made-up/123")

    text = (await api.client.get("/metrics")).text

    assert 'newsdigest_http_requests_total{method="POST",route="/v1/articles",status="200"}' in text
    assert 'newsdigest_http_requests_total{method="GET",route="/v1/articles/{article_id}",status="200"}' in text
    assert "cms-1" not in text
    assert 'route="unmatched",status="404"' in text
    assert "made-up" not in text
    assert 'newsdigest_jobs_total{kind="analyze_article",status="succeeded"}' in text
    assert "newsdigest_job_queue_depth 0.0" in text
    assert "newsdigest_http_request_seconds_bucket" in text
    assert "newsdigest_llm_calls_total" in text


async def test_an_analysis_records_its_repairs_in_the_metrics(api: Api, registry: PromptRegistry) -> None:
    payload = article(1)
    facts = facts_answer(payload)["facts"]
    moved = {**facts[0], "sentences": [2]}  # sentence 1's claim cited on sentence 2: the service moves it
    api.faults.script([ok({"facts": [moved, facts[1]]}), ok(neutral())])
    key_facts = registry.get("key_facts").ref

    def count(text: str, name: str) -> float:
        found = [line for line in text.splitlines() if line.startswith(f'{name}{{prompt="{key_facts}"}} ')]
        return float(found[0].rsplit(" ", 1)[1]) if found else 0.0

    names = ("newsdigest_repaired_items_total", "newsdigest_reasks_total", "newsdigest_rejected_items_total")
    before = (await api.client.get("/metrics")).text
    response = await api.client.post("/v1/articles", params={"wait": 10}, json=payload)
    after = (await api.client.get("/metrics")).text

    assert response.status_code == 200, response.text
    assert [count(after, n) - count(before, n) for n in names] == [1.0, 0.0, 0.0]


async def test_prompts_lists_versions_hashes_and_the_active_ones(api: Api, registry: PromptRegistry) -> None:
    catalog = (await api.client.get("/v1/prompts")).json()

    assert catalog["active"] == registry.active
    refs = {p["ref"]: p for p in catalog["prompts"]}
    assert set(refs) == {p.ref for p in registry.all()}
    assert refs["key_facts@1"]["sha256"] == registry.get("key_facts", 1).sha256
    assert refs["key_facts@1"]["active"] is (registry.active["key_facts"] == 1)
    assert refs["digest@1"]["output_schema"] == "schemas.digest.DigestDraft"


async def test_openapi_models_every_route_with_tagged_operation_ids(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()

    operations = {(path, method): op for path, item in spec["paths"].items() for method, op in item.items()}
    assert {op["operationId"] for op in operations.values()} == {
        "articles-submit", "articles-read", "digests-request_digest", "digests-read", "stories-current_digest",
        "jobs-read", "prompts-catalog", "health-healthz", "health-readyz", "health-prometheus", "webhooks-cms_event",
    }
    submit = operations[("/v1/articles", "post")]
    assert submit["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ArticleIn")
    assert submit["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/JobAccepted")
    assert submit["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ArticleView")
    assert submit["responses"]["422"]["content"]["application/problem+json"]["schema"]["$ref"].endswith("/Problem")
    assert "queue its analysis" in submit["description"]
    assert "text/html" in operations[("/v1/stories/{story_id}/digest", "get")]["responses"]["200"]["content"]
    assert (await api.client.get("/docs")).status_code == 200


async def test_start_up_refuses_an_unmigrated_database(tmp_path: object, settings_for: Callable[..., Settings]) -> None:
    app = create_app(settings_for(f"sqlite+aiosqlite:///{tmp_path}/fresh.db", migrate_on_start=False))

    with pytest.raises(ConfigError, match="newsdigest db upgrade"):
        async with LifespanManager(app):
            pass


async def test_without_keys_in_development_the_api_is_open(
        sqlite_url: str, settings_for: Callable[..., Settings], fault_server: FaultServer) -> None:
    async for api in open_api(settings_for(sqlite_url, api_keys=[]), fault_server):
        api.client.headers.pop("Authorization")

        assert (await api.client.get("/v1/prompts")).status_code == 200


def test_production_needs_api_keys(tmp_path: object) -> None:
    with pytest.raises(ValueError, match="API_KEYS"):
        Settings(environment="production", api_keys=[], database_url=f"sqlite:///{tmp_path}/x.db")
