"""Valid model answers for test articles, computed from the prepared text (for the fault server).

A fact's claim is the very sentence it cites, and sentiment is neutral citing sentence 1, so
every answer passes verification; a digest statement repeats the claim of the fact it cites.
"""

from __future__ import annotations

from typing import Any

from schemas import ArticleIn
from service.pipeline.text import prepare
from tests.fault_server import Fault, ok


def article(n: int, *, story_id: str | None = "council-budget", outlet: str | None = None, cms_id: str | None = None,
            extra: str = "") -> dict[str, Any]:
    """An ArticleIn as JSON: three short sentences, distinct per ``n``."""
    body = (f"The council of Town{n} approved a budget of {n} million euros on Monday. "
            f"The mayor of Town{n} said schools get most of the money. "
            f"Critics in Town{n} called the plan rushed.{extra}")
    return {"id": cms_id or f"cms-{n}", "story_id": story_id, "outlet": outlet or f"Outlet {n}",
            "title": f"Town{n} budget", "body": body, "language": "en"}


def facts_answer(payload: dict[str, Any], count: int = 2) -> dict[str, Any]:
    prepared = prepare(ArticleIn.model_validate(payload), max_chars=100_000)
    return {"facts": [{"claim": s.text, "sentences": [s.n]} for s in prepared.sentences[:count]]}


def sentiment_answer() -> dict[str, Any]:
    return {"overall": "neutral", "score": 0.0, "sentences": [1], "entities": []}


def analysis(payload: dict[str, Any]) -> list[Fault]:
    """The two answers one article's analysis needs: key facts first, then sentiment."""
    return [ok(facts_answer(payload)), ok(sentiment_answer())]


def digest_answer(payloads: list[dict[str, Any]]) -> Fault:
    """A digest citing the first fact of each article, in the order the job lists them."""
    statements = []
    for n, payload in enumerate(payloads, 1):
        claim = facts_answer(payload)["facts"][0]["claim"]
        statements.append({"text": claim, "facts": [f"A{n}.F1"]})
    return ok({"headline": statements[0]["text"], "statements": statements, "disagreements": []})
