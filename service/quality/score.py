"""Score a digest against its story's gold annotations (pure).

A central fact is in the digest when a statement (or an "also reported" line) cites a sentence
that the gold names for that fact; its outlets are the articles whose gold sentences those
statements cite. A gold disagreement is found when one published disagreement cites, on two
different sides, sentences of two different gold sides. Faithfulness is scored too: every quote
must be its article's sentence, character for character, and every number in a statement must be
in the sentences it cites.
"""

from __future__ import annotations

from pydantic import BaseModel

from schemas import Digest, Extraction, PreparedArticle, Statement
from service.pipeline.verify import numbers_in
from service.quality.gold import Evidence, Gold


def _fold(text: str) -> str:
    return " ".join(text.replace("\\", "").split()).casefold()


def sentences_of(evidence: Evidence, articles: dict[str, PreparedArticle]) -> set[tuple[str, int]]:
    """(slug, sentence number) of every sentence that contains one of the excerpts."""
    found = set()
    for slug, excerpts in evidence.items():
        article = articles.get(slug)
        if article is None:
            continue
        for excerpt in excerpts:
            needle = _fold(excerpt)
            found |= {(slug, s.n) for s in article.sentences if needle in _fold(s.text)}
    return found


class StoryScore(BaseModel):
    story_id: str
    central_facts: int
    facts_found: int
    outlet_coverage: float  # mean share of the outlets stating a found fact that its statements cite
    disagreements: int
    disagreements_found: int
    disagreements_published: int
    disagreements_correct: int
    statements: int
    statements_numbers_ok: int
    quotes: int
    quotes_verbatim: int
    facts_kept: int
    repaired: int
    reasks: int
    rejected: int
    calls: int
    tokens: int
    seconds: float
    missing: list[str]
    missed_disagreements: list[str]

    @property
    def recall(self) -> float:
        return self.facts_found / self.central_facts if self.central_facts else 1.0

    @property
    def disagreement_recall(self) -> float:
        return self.disagreements_found / self.disagreements if self.disagreements else 1.0

    @property
    def disagreement_precision(self) -> float:
        return self.disagreements_correct / self.disagreements_published if self.disagreements_published else 1.0


def _cites(statement: Statement, wanted: set[tuple[str, int]]) -> set[str]:
    return {c.article_id or "" for c in statement.citations if (c.article_id or "", c.sentence) in wanted}


def score(gold: Gold, digest: Digest, articles: dict[str, PreparedArticle], extractions: list[Extraction],
          *, seconds: float) -> StoryScore:
    lines = [*digest.statements, *digest.also_reported]
    found, coverage, missing = 0, [], []
    for fact in gold.central_facts:
        wanted = sentences_of(fact.stated_in, articles)
        outlets = set().union(*(_cites(s, wanted) for s in lines)) if lines else set()
        if outlets:
            found += 1
            coverage.append(len(outlets) / len(fact.stated_in))
        else:
            missing.append(fact.id)
    correct = 0
    hit: set[str] = set()
    for published in digest.disagreements:
        cited = [{(c.article_id or "", c.sentence) for c in p.citations} for p in published.positions]
        for known in gold.disagreements:
            sides = [sentences_of(side.evidence, articles) for side in known.sides]
            if any(cited[p] & sides[i] and cited[q] & sides[j] for p in range(len(cited)) for q in range(len(cited))
                   if p != q for i in range(len(sides)) for j in range(len(sides)) if i != j):
                hit.add(known.id)
                correct += 1
                break
    quotes = [c for s in lines for c in s.citations] + [c for d in digest.disagreements for p in d.positions
                                                         for c in p.citations]
    verbatim = sum(1 for c in quotes if c.article_id in articles
                   and 1 <= c.sentence <= len(articles[c.article_id].sentences)
                   and articles[c.article_id].sentence(c.sentence).text == c.quote)
    numbers_ok = sum(1 for s in lines if numbers_in(s.text) <= numbers_in(" ".join(c.quote for c in s.citations)))
    provs = [p for e in extractions for p in e.provenance.values()] + ([digest.provenance] if digest.provenance else [])
    return StoryScore(
        story_id=gold.story_id, central_facts=len(gold.central_facts), facts_found=found,
        outlet_coverage=round(sum(coverage) / len(coverage), 3) if coverage else 0.0,
        disagreements=len(gold.disagreements), disagreements_found=len(hit),
        disagreements_published=len(digest.disagreements), disagreements_correct=correct,
        statements=len(lines), statements_numbers_ok=numbers_ok, quotes=len(quotes), quotes_verbatim=verbatim,
        facts_kept=sum(len(e.facts) for e in extractions), repaired=sum(p.repaired for p in provs),
        reasks=sum(p.reasks for p in provs), rejected=sum(p.rejected for p in provs),
        calls=sum(len(p.calls) for p in provs), tokens=sum(c.input_tokens + c.output_tokens for p in provs
                                                           for c in p.calls),
        seconds=round(seconds, 1), missing=missing,
        missed_disagreements=[d.id for d in gold.disagreements if d.id not in hit],
    )
