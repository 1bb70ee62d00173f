"""Provenance counts reach the metrics at the edge (``record_outcomes``), never from inside a stage."""

from __future__ import annotations

from prometheus_client import REGISTRY

from schemas import PromptProvenance
from service import metrics


def value(name: str, prompt: str) -> float:
    return REGISTRY.get_sample_value(name, {"prompt": prompt}) or 0.0


def test_record_outcomes_adds_each_provenances_reasks_rejections_and_repairs() -> None:
    names = ("newsdigest_reasks_total", "newsdigest_rejected_items_total", "newsdigest_repaired_items_total")
    before = {(n, p): value(n, p) for n in names for p in ("test_a@1", "test_b@1")}
    a = PromptProvenance(prompt="test_a@1", prompt_hash="h", model="m", mode="json_object",
                         reasks=1, rejected=2, repaired=3)
    b = PromptProvenance(prompt="test_b@1", prompt_hash="h", model="m", mode="json_object", repaired=1)

    metrics.record_outcomes([a, b, a])

    after = {key: value(*key) - was for key, was in before.items()}
    assert after == {
        ("newsdigest_reasks_total", "test_a@1"): 2.0,
        ("newsdigest_rejected_items_total", "test_a@1"): 4.0,
        ("newsdigest_repaired_items_total", "test_a@1"): 6.0,
        ("newsdigest_reasks_total", "test_b@1"): 0.0,
        ("newsdigest_rejected_items_total", "test_b@1"): 0.0,
        ("newsdigest_repaired_items_total", "test_b@1"): 1.0,
    }

