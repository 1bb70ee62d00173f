"""digest: one cited digest of a story from its articles' verified facts (pure; the model injected).

The service decides what the digest says; the model only words it. ``align`` groups the verified
facts by what they are about and ``disagree`` finds where outlets contradict each other. The model
is shown the groups, each fact with an id like ``A2.F3``, and asked for one statement per group
citing those ids. Every statement it writes is checked (ids, numbers and dates in the cited
sentences, enough shared words); a group it leaves out or words wrongly is published as its own
best verified claim, unchanged, so no verified fact is lost. Citations, corroboration, the order,
disagreements and sentiment are the service's, never the model's.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import ValidationError

from schemas import (
    Citation,
    Digest,
    DigestDraft,
    Disagreement,
    Extraction,
    Position,
    PreparedArticle,
    PromptProvenance,
    Rejection,
    Source,
    Statement,
    StatementDraft,
)
from schemas.digest import WrittenBy
from service.errors import InputError, validation_lines
from service.llm.port import Completer
from service.pipeline import disagree
from service.pipeline.align import CitedFact, FactGroup, align, copies_of, fact_index
from service.pipeline.reask import Answer, Checked, ask_checked
from service.pipeline.sentiment import aggregate
from service.pipeline.text import clean_inline
from service.pipeline.verify import (
    MIN_STATEMENT_OVERLAP,
    quotes,
    statement_problems,
    stating,
    support_problems,
)
from service.prompts import Prompt

#: Statements in the digest proper; the groups past it are listed under "also reported", each cited.
MAX_STATEMENTS = 8


def _parse(answer: Answer) -> DigestDraft | list[str]:
    if answer.problem:
        return [answer.problem]
    try:
        draft = DigestDraft.model_validate(answer.data)
    except ValidationError as exc:
        return validation_lines(exc)
    return draft.model_copy(update={
        "headline": clean_inline(draft.headline),
        "statements": [s.model_copy(update={"text": clean_inline(s.text)}) for s in draft.statements],
    })


class _Story:
    """The facts of a story as the digest checks and cites them."""

    def __init__(self, extractions: list[Extraction], copies: dict[int, int]) -> None:
        self.index = fact_index(extractions)
        self.evidence = {i: f.evidence for i, f in self.index.items()}
        self.claims = {i: f.fact.claim for i, f in self.index.items()}
        self.copies = copies
        self.extractions = extractions

    def problems(self, statement: StatementDraft) -> list[str]:
        return statement_problems(statement.text, statement.facts, self.evidence, self.claims)

    def supporters(self, text: str, cited: list[str], candidates: list[CitedFact]) -> list[str]:
        """Facts of other outlets that state ``text`` by themselves, as the cited ones do."""
        outlets = {self.index[i].outlet for i in cited}
        found = []
        for fact in candidates:
            if fact.fact_id in cited or fact.outlet in outlets:
                continue
            if not support_problems(text, [fact.fact_id], self.evidence, min_overlap=MIN_STATEMENT_OVERLAP):
                found.append(fact.fact_id)
                outlets.add(fact.outlet)
        return found

    def citations(self, ids: list[str]) -> list[Citation]:
        return [Citation.of(i, self.index[i].extraction.article, q) for i in dict.fromkeys(ids)
                for q in self.index[i].fact.citations]

    def statement(self, text: str, ids: list[str], written_by: WrittenBy) -> Statement:
        roots = {self.index[i].extraction.article.outlet if (n := self.index[i].article) not in self.copies
                 else self.extractions[self.copies[n] - 1].article.outlet for i in ids}
        return Statement(text=text, citations=self.citations(ids), outlets=len(roots), written_by=written_by)


def prompt_groups(groups: list[FactGroup]) -> list[dict[str, object]]:
    return [
        {"n": n, "outlets": len(g.outlets),
         "facts": [{"id": f.fact_id, "outlet": f.outlet, "claim": f.fact.claim} for f in g.facts]}
        for n, g in enumerate(groups, 1)
    ]


def prompt_articles(extractions: list[Extraction]) -> list[dict[str, object]]:
    """The facts by article, as digest prompts before version 3 list them."""
    return [
        {"n": n, "outlet": e.article.outlet, "title": e.article.title, "facts": e.facts,
         "published": e.article.published_at.date().isoformat() if e.article.published_at else None}
        for n, e in enumerate(extractions, 1)
    ]


def _checked(answer: Answer, story: _Story) -> Checked[tuple[DigestDraft | None, dict[int, list[str]]]]:
    parsed = _parse(answer)
    if isinstance(parsed, list):
        return Checked((None, {}), parsed)
    draft = parsed.model_copy(update={"statements": [
        s.model_copy(update={"facts": stating(s.text, s.facts, story.evidence)}) for s in parsed.statements]})
    bad = {i: [f'statement {i + 1} ("{s.text[:80]}"): {p}' for p in found]
           for i, s in enumerate(draft.statements) if (found := story.problems(s))}
    # Bad statements are replaced by the facts they were to word; only a mostly unusable answer is asked again.
    problems = [line for lines in bad.values() for line in lines] if 2 * len(bad) > len(draft.statements) else []
    return Checked((draft, bad), problems)


def _disagreements(found: list[disagree.Found], story: _Story, numbered: list[Extraction],
                   articles: list[PreparedArticle]) -> list[Disagreement]:
    """The service's findings as published disagreements, each side citing its exact sentences."""
    by_sentence = {(n, q.sentence): f"A{n}.{fact.id}" for n, e in enumerate(numbered, 1) for fact in e.facts
                   for q in fact.citations}
    published = []
    for item in found:
        positions = []
        for says, pairs in item.sides:
            citations = [
                Citation.of(by_sentence.get((n, s), f"A{n}.S{s}"), numbered[n - 1].article,
                            quotes([s], articles[n - 1])[0])
                for n, s in pairs
            ]
            positions.append(Position(says=says, outlets=sorted({c.outlet for c in citations}), citations=citations))
        subject = item.subject.split("/")
        topic = f"{subject[0].title()}: {item.kind}" + (f" ({subject[1]})" if len(subject) > 1 else "")
        published.append(Disagreement(topic=topic, kind=item.kind, positions=positions, written_by="service"))
    return published


async def build_digest(
    extractions: list[Extraction],
    prompt: Prompt,
    llm: Completer,
    *,
    articles: list[PreparedArticle] | None = None,
    story_id: str | None = None,
    language: str = "en",
    other_sources: list[Source] | None = None,
    max_statements: int = MAX_STATEMENTS,
) -> Digest:
    """One digest from the articles that produced facts; ``other_sources`` lists failed or duplicate ones.

    ``articles`` are the prepared texts (any order, matched by content hash); with them the service
    also finds disagreements in sentences no fact cites, and recognises copies of one text.
    """
    usable = [e for e in extractions if e.facts]
    if not usable:
        raise InputError("no article of this story produced a verified fact; nothing to digest")
    by_hash = {a.content_hash: a for a in articles or []}
    texts = [by_hash.get(e.article.content_hash) for e in usable]
    sentences = {n: {s.text for s in t.sentences} for n, t in enumerate(texts, 1) if t is not None}
    copies = copies_of(usable, sentences)
    story = _Story(usable, copies)
    groups = align(story.index, copies)
    shown = groups[:max_statements]
    prov = PromptProvenance(prompt=prompt.ref, prompt_hash=prompt.sha256, model=llm.model, mode=llm.mode)
    messages = prompt.messages(groups=prompt_groups(shown), articles=prompt_articles(usable), language=language,
                               n_statements=len(shown), min_statements=min(3, len(shown)),
                               max_statements=max_statements)
    # An unusable answer comes back as a problem, not an error: the facts are then worded by the service.
    rounds = await ask_checked(llm, prompt, messages, prov, lambda answer: _checked(answer, story))
    usable_rounds = [r for r in rounds if r.value[0] is not None]
    draft, bad = usable_rounds[-1].value if usable_rounds else (None, {})
    if rounds and not usable_rounds:
        prov.error = "no usable digest after a re-ask: " + "; ".join(rounds[-1].problems)[:300]
    prov.rejected = len(bad)
    prov.rejections = [Rejection(item=draft.statements[i].text, reasons=r) for i, r in bad.items()] if draft else []

    group_of = {f.fact_id: g for g in groups for f in g.facts}
    rank = {g.id: k for k, g in enumerate(groups)}
    placed: list[tuple[int, Statement]] = []
    cited: set[str] = set()
    for i, st in enumerate(draft.statements if draft else []):
        if i in bad or not set(st.facts) - cited:
            continue
        mine = list({group_of[f].id: group_of[f] for f in st.facts}.values())
        ids = st.facts + story.supporters(st.text, st.facts, [f for g in mine for f in g.facts])
        cited.update(ids)
        placed.append((min(rank[g.id] for g in mine), story.statement(st.text, ids, "model")))
    for group in groups:  # what the model left out or worded wrongly: the verified claims themselves
        while left := [f for f in group.facts if f.fact_id not in cited]:
            best = min(left, key=lambda f: (int(f.fact.id[1:]), f.article))
            ids = [best.fact_id, *story.supporters(best.fact.claim, [best.fact_id], left)]
            cited.update(ids)
            placed.append((rank[group.id], story.statement(best.fact.claim, ids, "service")))
    placed.sort(key=lambda item: item[0])
    statements = [s for _, s in placed]
    published, also = statements[:max_statements], statements[max_statements:]

    headline = draft.headline if draft else ""
    published_ids = [c.fact_id for s in published for c in s.citations]
    if not headline or support_problems(headline, list(dict.fromkeys(published_ids)), story.evidence,
                                        min_overlap=MIN_STATEMENT_OVERLAP):
        # The headline carries no citation of its own, so it may say only what the published statements'
        # sentences say; otherwise the top statement stands in for it.
        headline = published[0].text
    found = disagree.disagreements([t for t in texts if t is not None], copies) if all(texts) else []
    disagreements = _disagreements(found, story, usable, [t for t in texts if t is not None])
    sources = [
        Source.of(e.article, status="used" if (e.article.language or language)[:2] == language[:2]
                  else "other_language", facts=len(e.facts), verified=e.facts,
                  copy_of=usable[copies[n] - 1].article.outlet if n in copies else None,
                  rejected=[r for p in e.provenance.values() for r in p.rejections], usage=e.usage)
        for n, e in enumerate(usable, 1)
    ]
    sources += [
        Source.of(e.article, status="failed", error=_first_error(e),
                  rejected=[r for p in e.provenance.values() for r in p.rejections], usage=e.usage)
        for e in extractions if not e.facts
    ]
    return Digest(
        story_id=story_id,
        headline=headline,
        statements=published,
        also_reported=also,
        disagreements=disagreements,
        sentiment=aggregate(usable),
        sources=sources + list(other_sources or []),
        language=language,
        provenance=prov,
        usage=sum((e.usage for e in extractions), prov.usage),
        created_at=datetime.now(UTC),
    )


def _first_error(extraction: Extraction) -> str:
    errors = [p.error for p in extraction.provenance.values() if p.error]
    return errors[0] if errors else "no verified fact"
