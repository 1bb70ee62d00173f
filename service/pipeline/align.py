"""align: group the verified facts of a story's articles by what they are about (pure).

Facts from different outlets that share a significant number or date, or most of their content
words and a name, are one group; a group's outlets are its corroboration. An article that repeats
another almost word for word (a wire copy) is one source, not two: its outlet is cited, but it
adds no corroboration. Groups are ordered by corroboration, then by how early the articles tell
them (a reporter's first facts are the story's most important).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from schemas import Extraction, Fact
from service.pipeline.verify import content_words, months_in, numbers_in

#: Share of the smaller fact's content words two facts without figures must share to be about one thing,
SAME_SUBJECT = 0.35
#: ... and when only one of them carries an amount or a percentage (a deal's terms beside a move it paid for).
SAME_SUBJECT_ONE_FIGURE = 0.75
#: Words two facts must share at least, so two short claims do not meet on one or two words.
MIN_SHARED_WORDS = 4
#: Share of an article's sentences found word for word in another for it to count as a copy.
COPY_SHARE = 0.7
_NAME = re.compile(r"\b[A-Z][\w'’.-]*[A-Za-z](?:\s+[A-Z][\w'’.-]*[A-Za-z])*")


@dataclass(frozen=True)
class CitedFact:
    """A verified fact with its story-wide id ``A<n>.F<m>``."""

    fact_id: str
    article: int
    extraction: Extraction
    fact: Fact

    @property
    def outlet(self) -> str:
        return self.extraction.article.outlet

    @property
    def evidence(self) -> str:
        """What the fact puts on record: its claim and the exact sentences it cites."""
        return self.fact.claim + " " + " ".join(q.quote for q in self.fact.citations)


def fact_index(extractions: list[Extraction]) -> dict[str, CitedFact]:
    """``A<n>.F<m>`` for every verified fact, articles numbered in the order given."""
    return {
        f"A{n}.{fact.id}": CitedFact(f"A{n}.{fact.id}", n, extraction, fact)
        for n, extraction in enumerate(extractions, 1)
        for fact in extraction.facts
    }


_FIGURE = re.compile(r"(?:[$€£¥]\s?(\d[\d,.]*\d|\d))|(\d[\d,.]*\d|\d)\s?(?:%|percent|per cent|billion|million|bn\b)",
                     re.IGNORECASE)


def figures(text: str) -> set[str]:
    """Amounts and percentages: what makes a fact about a deal rather than about the people in it."""
    return {numbers_in(a or b).pop() for a, b in _FIGURE.findall(text) if numbers_in(a or b)}


def _words(text: str) -> set[str]:
    return content_words(re.sub(r"['’]s\b", "", text))


def significant_numbers(text: str) -> set[str]:
    """Numbers that identify a fact (amounts, years, percentages): not the small counts of prose."""
    return {n for n in numbers_in(text) if len(n.replace(".", "")) >= 2 or "." in n} | months_in(text)


def names_in(text: str) -> set[str]:
    """Capitalised words, folded, possessives dropped: who and what a claim is about. A claim's first
    word counts too (claims start with their subject), unless it is a word any sentence may start with."""
    names = set()
    for match in _NAME.findall(text):
        for word in match.split():
            word = re.sub(r"['’]s$", "", word).casefold()
            if len(word) > 2 and word not in _STARTERS:
                names.add(word)
    return names


_STARTERS = frozenset("the this that these those his her its their our after before with while when".split())


def similarity(a: CitedFact, b: CitedFact) -> float:
    """How surely two facts are about the same thing, 0 when they are not."""
    wa, wb = _words(a.fact.claim), _words(b.fact.claim)
    shared = wa & wb
    if not wa or not wb:
        return 0.0
    share = len(shared) / min(len(wa), len(wb))
    if significant_numbers(a.fact.claim) & significant_numbers(b.fact.claim) and len(shared) >= 2:
        return 1.0 + share
    if not names_in(a.fact.claim) & names_in(b.fact.claim) or len(shared) < MIN_SHARED_WORDS:
        return 0.0
    needed = SAME_SUBJECT_ONE_FIGURE if bool(figures(a.fact.claim)) != bool(figures(b.fact.claim)) else SAME_SUBJECT
    return share if share >= needed else 0.0


def same_subject(a: CitedFact, b: CitedFact) -> bool:
    return similarity(a, b) > 0


@dataclass
class FactGroup:
    """Facts about one thing, from one or more outlets."""

    facts: list[CitedFact] = field(default_factory=list)
    #: Articles (by number) that are copies of another; they are cited but do not corroborate.
    copies: dict[int, int] = field(default_factory=dict)
    id: str = ""

    @property
    def outlets(self) -> list[str]:
        return list(dict.fromkeys(f.outlet for f in self.facts))

    @property
    def corroboration(self) -> int:
        """Independent outlets: a copy counts as the article it copies."""
        return len({self.copies.get(f.article, f.article) for f in self.facts})

    @property
    def best(self) -> CitedFact:
        """The fact an editor would publish for the group: from the article that tells it earliest."""
        return min(self.facts, key=lambda f: (int(f.fact.id[1:]), f.article))

    @property
    def rank(self) -> tuple[int, float]:
        positions = [int(f.fact.id[1:]) for f in self.facts]
        return -self.corroboration, sum(positions) / len(positions)


def copies_of(extractions: list[Extraction], sentences: dict[int, set[str]]) -> dict[int, int]:
    """Article number -> the earlier article it copies, by the share of its sentences found in that one."""
    found: dict[int, int] = {}
    for n in range(1, len(extractions) + 1):
        mine = sentences.get(n, set())
        for earlier in range(1, n):
            theirs = sentences.get(earlier, set())
            if mine and theirs and len(mine & theirs) / min(len(mine), len(theirs)) >= COPY_SHARE:
                found[n] = found.get(earlier, earlier)
                break
    return found


def align(index: dict[str, CitedFact], copies: dict[int, int] | None = None) -> list[FactGroup]:
    """Every verified fact in exactly one group, groups in the order an editor would read them."""
    groups: list[FactGroup] = []
    for fact in index.values():
        # The group it resembles most on average, and like at least half of whose facts, so that one fact
        # touching two subjects does not chain them into one group.
        scored = []
        for k, group in enumerate(groups):
            marks = [similarity(fact, other) for other in group.facts]
            if 2 * sum(m > 0 for m in marks) >= len(marks):
                scored.append((sum(marks) / len(marks), k))
        best = max(scored, default=(0.0, -1))
        home = groups[best[1]] if best[0] > 0 else None
        if home is None:
            home = FactGroup(copies=dict(copies or {}))
            groups.append(home)
        home.facts.append(fact)
    groups.sort(key=lambda g: g.rank)
    for n, group in enumerate(groups, 1):
        group.id = f"G{n}"
    return groups
