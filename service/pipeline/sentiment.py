"""Story sentiment, aggregated by the service from each article's verified sentiment (pure)."""

from __future__ import annotations

from collections import defaultdict
from statistics import mean

from schemas import EntitySentimentSummary, Extraction, OutletSentiment, SentimentLabel, StorySentiment

NEUTRAL_BAND = 0.2


def label_for(scores: list[float], labels: list[SentimentLabel]) -> SentimentLabel:
    """Outlets that pull both ways make a mixed story; otherwise the mean score decides."""
    if "positive" in labels and "negative" in labels:
        return "mixed"
    score = mean(scores)
    if score > NEUTRAL_BAND:
        return "positive"
    if score < -NEUTRAL_BAND:
        return "negative"
    return "mixed" if set(labels) == {"mixed"} else "neutral"


def aggregate(extractions: list[Extraction]) -> StorySentiment | None:
    judged = [e for e in extractions if e.sentiment is not None]
    if not judged:
        return None
    by_outlet = [
        OutletSentiment(outlet=e.article.outlet, label=e.sentiment.overall, score=e.sentiment.score)
        for e in judged
        if e.sentiment
    ]
    entities: dict[str, list[tuple[str, str, SentimentLabel, float]]] = defaultdict(list)
    for e in judged:
        assert e.sentiment is not None
        for ent in e.sentiment.entities:
            entities[" ".join(ent.entity.casefold().split())].append(
                (ent.entity, e.article.outlet, ent.label, ent.score)
            )
    summaries = []
    for rows in entities.values():
        scores = [r[3] for r in rows]
        summaries.append(
            EntitySentimentSummary(
                entity=rows[0][0],
                label=label_for(scores, [r[2] for r in rows]),
                score=round(mean(scores), 3),
                outlets=len({r[1] for r in rows}),
            )
        )
    summaries.sort(key=lambda s: (-s.outlets, s.entity.casefold()))
    scores = [o.score for o in by_outlet]
    return StorySentiment(
        overall=label_for(scores, [o.label for o in by_outlet]),
        score=round(mean(scores), 3),
        by_outlet=by_outlet,
        entities=summaries,
    )
