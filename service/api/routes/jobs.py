"""GET /v1/jobs/{id}: where a queued analysis or digest stands."""

from __future__ import annotations

from fastapi import APIRouter

from schemas import JobView
from service.api.deps import ApiKeyDep, SessionDep
from service.api.problems import problem_responses
from service.api.views import job_view
from service.errors import NotFoundError
from service.store import jobs

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobView, responses=problem_responses(401, 404))
async def read(job_id: str, caller: ApiKeyDep, session: SessionDep) -> JobView:
    """Status (queued, running, succeeded, failed), attempts so far, the last error and the result's ids."""
    job = await jobs.get_job(session=session, job_id=job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    return job_view(job)
