"""GET /v1/prompts: every published prompt version and which one is active."""

from __future__ import annotations

from fastapi import APIRouter

from schemas import PromptCatalog, PromptInfo
from service.api.deps import ApiKeyDep, RegistryDep
from service.api.problems import problem_responses

router = APIRouter(prefix="/prompts", tags=["prompts"])


@router.get("", response_model=PromptCatalog, responses=problem_responses(401))
async def catalog(caller: ApiKeyDep, registry: RegistryDep) -> PromptCatalog:
    """Prompt names, versions, sha256 hashes and the active versions (pin others with `?prompt=name@N`)."""
    active = registry.active
    return PromptCatalog(active=active, prompts=[
        PromptInfo(name=p.meta.name, version=p.meta.version, ref=p.ref, sha256=p.sha256,
                   active=active.get(p.meta.name) == p.meta.version, output_schema=p.meta.schema_path,
                   description=p.meta.description, temperature=p.meta.temperature, max_tokens=p.meta.max_tokens)
        for p in registry.all()
    ])
