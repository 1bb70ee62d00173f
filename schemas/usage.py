"""What each model call cost, summed upwards into articles and digests."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CallUsage(BaseModel):
    """One model call (all its HTTP attempts, failed ones included)."""

    prompt: str = Field(description="name@version of the prompt.")
    prompt_hash: str
    model: str = Field(description="The model requested.")
    resolved_model: str | None = Field(default=None, description="The model that answered, as reported.")
    mode: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = Field(default=0, description="Counted inside input_tokens too.")
    latency_ms: int = Field(
        default=0, description="The model's own time: its HTTP attempts, failed ones included; not queue_ms, "
        "nor the backoff between attempts.")
    queue_ms: int = Field(
        default=0, description="Time spent waiting for a concurrency slot and the shared rate window, all attempts.")
    attempts: int = Field(default=1, description="HTTP attempts, failed ones included.")
    finish_reason: str | None = None
    outcome: str = Field(default="ok", description="ok, invalid, refused, truncated or error.")
    cost_usd: float | None = Field(default=None, description="None means unknown, not zero.")


class Usage(BaseModel):
    """Sum of several calls."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    latency_ms: int = 0
    queue_ms: int = 0
    cost_usd: float | None = Field(
        default=0.0, description="US dollars of all the calls; None when any one's price is unknown (a local or "
        "unlisted model): a partial sum would read as the whole bill.")

    def __add__(self, other: CallUsage | Usage) -> Usage:
        count = other.requests if isinstance(other, Usage) else 1
        return Usage(
            requests=self.requests + count,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            latency_ms=self.latency_ms + other.latency_ms,
            queue_ms=self.queue_ms + other.queue_ms,
            cost_usd=(None if self.cost_usd is None or other.cost_usd is None
                      else round(self.cost_usd + other.cost_usd, 8)),
        )

    @classmethod
    def of(cls, calls: list[CallUsage]) -> Usage:
        total = cls()
        for call in calls:
            total = total + call
        return total
