"""verify: check every cited claim against the article's own sentences (pure).

The model cites sentence numbers; here we make sure each citation exists, that the claim's
numbers, amounts, percentages and dates are written in the cited sentences, and that the
claim and its sentences share enough content words to be about the same thing. Each problem
is a sentence the re-ask shows the model, so it says exactly what to fix.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from itertools import combinations

from schemas import EntitySentimentDraft, FactDraft, PreparedArticle, Sentence, SentenceQuote, SentimentDraft

MAX_CITED = 3
MIN_OVERLAP = 0.5
#: Each cited sentence must carry this share of the claim's words, so no citation is padding.
MIN_SENTENCE_SHARE = 0.25
# Share of the shorter claim's words that makes a fact citing the same sentences a restatement.
REPEAT_OVERLAP = 0.7
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
#: Month names in calendar order, as every date check reads them.
MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_STOPWORDS = frozenset(
    """
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had
has have having he her here hers herself him himself his how i if in into is it its itself just
me more most my no nor not now of off on once only or other our out over own same she should so
some such than that the their them then there these they this those through to too under until
up very was we were what when where which while who whom why will with would you your said says
say according reported reports report new one two also its it's has have will would
""".split()
)


# The checks read the same texts again and again (an article's sentences for every claim citing them, in
# every re-ask and repair, and a claim against each kept one), so what they read of a text is kept for the
# most recent texts. Kept as frozensets: the public functions hand out copies, which callers may change.
_CACHED = 4096
_THOUSANDS = re.compile(r",(?=\d{3}\b)")
_MAY = re.compile(r"\bmay\s+\d|\d\s+may\b")


@lru_cache(maxsize=_CACHED)
def _fold(text: str) -> str:
    """Lower case without accents, curly quotes made straight: comparisons ignore typography."""
    if text.isascii():  # nothing to decompose, no accent or curly quote: what the general case gives
        return text.lower()
    text = unicodedata.normalize("NFKD", text).replace("’", "'").replace("‘", "'")
    return "".join(ch for ch in text if not unicodedata.combining(ch)).lower()


@lru_cache(maxsize=_CACHED)
def _numbers(text: str) -> frozenset[str]:
    found = set()
    for raw in _NUMBER.findall(text):
        value = _THOUSANDS.sub("", raw).rstrip(".,")
        found.add(value.lstrip("0") or "0")
    return frozenset(found)


@lru_cache(maxsize=_CACHED)
def _months(text: str) -> frozenset[str]:
    folded = _fold(text)
    words = set(_WORD.findall(folded))
    found = {m for m in MONTHS if m != "may" and (m in words or m[:3] in words)}
    if _MAY.search(folded):  # "may" is a month only next to a day number
        found.add("may")
    return frozenset(found)


@lru_cache(maxsize=_CACHED)
def _words(text: str) -> frozenset[str]:
    return frozenset(w[:5] for w in _WORD.findall(_fold(text)) if len(w) > 2 and w not in _STOPWORDS)


def numbers_in(text: str) -> set[str]:
    """Numbers as written, thousands separators dropped: '1,117,320' -> '1117320', '14.3' stays."""
    return set(_numbers(text))


def months_in(text: str) -> set[str]:
    return set(_months(text))


def content_words(text: str) -> set[str]:
    """Stems (first 5 letters) of words that carry meaning."""
    return set(_words(text))


def citation_problems(numbers: list[int], article: PreparedArticle) -> list[str]:
    """Range, count and duplicate checks for a list of cited sentence numbers."""
    total = len(article.sentences)
    problems = []
    if not numbers:
        problems.append("it cites no sentence")
    if len(numbers) > MAX_CITED:
        problems.append(f"it cites {len(numbers)} sentences; cite 1 to {MAX_CITED}")
    if len(set(numbers)) != len(numbers):
        problems.append("it cites the same sentence twice")
    problems += [
        f"sentence {n} does not exist (the article has sentences 1 to {total})" for n in numbers if not 1 <= n <= total
    ]
    return problems


def closest(text: str, candidates: dict[str, str]) -> str | None:
    """The candidate whose words best cover ``text``, if it covers enough of them to state it."""
    words = _words(text)
    if not words:
        return None
    scored = [(len(words & _words(value)) / len(words), key) for key, value in candidates.items()]
    best_score, best = max(scored, default=(0.0, None))
    return best if best_score >= MIN_OVERLAP else None


def repeats(claim: str, numbers: list[int], kept: list[tuple[str, list[int]]]) -> bool:
    """Whether a claim restates a kept one: the same sentences cited, mostly the same words.

    Two facts may well come from one sentence ("took 49%", "valued at $29 billion"); they differ in
    their words or numbers. A small model's second wording of one fact shares nearly all its words
    and adds no number.
    """
    words = _words(claim)
    for other, other_numbers in kept:
        if claim.casefold().split() == other.casefold().split():
            return True
        if sorted(other_numbers) != sorted(numbers) or not _numbers(claim) <= _numbers(other):
            continue
        theirs = _words(other)
        if words and theirs and len(words & theirs) / min(len(words), len(theirs)) >= REPEAT_OVERLAP:
            return True
    return False


def claim_problems(claim: str, numbers: list[int], article: PreparedArticle) -> list[str]:
    """Everything wrong with a claim and its citations; an empty list means it is supported.

    When the claim is wrongly cited, the sentence that states it best is named, because a small
    model most often cites a neighbouring number; the re-ask still has to be verified.
    """
    problems = _claim_problems(claim, numbers, article)
    if problems:
        hint = closest(claim, {str(s.n): s.text for s in article.sentences})
        if hint is not None and int(hint) not in numbers:
            problems.append(f"the sentence that states it best is {hint}")
    return problems


def _claim_problems(claim: str, numbers: list[int], article: PreparedArticle) -> list[str]:
    problems = citation_problems(numbers, article)
    if problems:
        return problems
    cited = " ".join(article.sentence(n).text for n in numbers)
    missing = sorted(_numbers(claim) - _numbers(cited))
    if missing:
        problems.append(f"the number(s) {', '.join(missing)} do not appear in sentence(s) {_list(numbers)}")
    missing_months = sorted(_months(claim) - _months(cited))
    if missing_months:
        problems.append(f"the date(s) {', '.join(missing_months)} do not appear in sentence(s) {_list(numbers)}")
    words = _words(claim)
    if words:
        overlap = len(words & _words(cited)) / len(words)
        if overlap < MIN_OVERLAP:
            problems.append(f"sentence(s) {_list(numbers)} do not state this claim (too few of its words appear there)")
        elif len(numbers) > 1:
            padding = [
                n
                for n in numbers
                if len(words & _words(article.sentence(n).text)) / len(words) < MIN_SENTENCE_SHARE
            ]
            if padding:
                problems.append(
                    f"sentence(s) {_list(padding)} say little of this claim; cite only sentences that state it"
                )
    return problems


def fact_problems(fact: FactDraft, article: PreparedArticle) -> list[str]:
    return claim_problems(fact.claim, fact.sentences, article)


#: Sentences tried as a repair, best covering first: pairs and triples are searched among these.
_REPAIR_CANDIDATES = 10


def repair(claim: str, numbers: list[int], article: PreparedArticle) -> list[int] | None:
    """Other sentences of the article that state ``claim`` by the same checks, or None.

    A small model most often cites the sentence next to the one carrying a number. The claim is
    never edited: only its citation moves, to one sentence, or two or three together, that pass
    every check a cited claim must pass. Among equals, the sentences nearest the cited ones win.
    """
    words = _words(claim)
    needed = _numbers(claim) | _months(claim)
    if not words:
        return None
    near = min(numbers) if numbers else 1

    def score(s: Sentence) -> tuple[int, float, int]:
        text = s.text
        carried = len(needed & (_numbers(text) | _months(text)))
        return carried, len(words & _words(text)) / len(words), -abs(s.n - near)

    ranked = sorted(article.sentences, key=score, reverse=True)[:_REPAIR_CANDIDATES]
    for size in (1, 2, 3):
        for group in combinations(ranked, size):
            chosen = sorted(s.n for s in group)
            if chosen != sorted(numbers) and not _claim_problems(claim, chosen, article):
                return chosen
    return None


def entity_problems(entity: EntitySentimentDraft, article: PreparedArticle) -> list[str]:
    problems = citation_problems(entity.sentences, article) + _label_problems(entity.label, entity.score)
    if not problems:
        cited = _fold(" ".join(article.sentence(n).text for n in entity.sentences))
        names = [w for w in _WORD.findall(_fold(entity.entity)) if len(w) > 2] or [_fold(entity.entity)]
        if not any(name in cited for name in names):
            problems.append(f"sentence(s) {_list(entity.sentences)} do not name {entity.entity!r}")
    return problems


def sentiment_problems(draft: SentimentDraft, article: PreparedArticle) -> list[str]:
    """Problems with the overall judgement (entities are checked one by one)."""
    return citation_problems(draft.sentences, article) + _label_problems(draft.overall, draft.score)


def _label_problems(label: str, score: float) -> list[str]:
    if label == "positive" and score <= 0:
        return [f"label positive needs a score above 0, not {score}"]
    if label == "negative" and score >= 0:
        return [f"label negative needs a score below 0, not {score}"]
    return []


def quotes(numbers: list[int], article: PreparedArticle) -> list[SentenceQuote]:
    """The journalist's exact sentences, filled in by the service, never by the model."""
    return [SentenceQuote(sentence=n, quote=article.sentence(n).text) for n in numbers]


def _list(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers)


# The digest's checks: a text the model wrote against the verified facts it cites. ``evidence`` maps a
# fact id to what that fact puts on record (its claim and its exact sentences).

MIN_STATEMENT_OVERLAP = 0.5
#: Sides sharing this much of their wording, with no number of their own, report the same thing.
SAME_SIDE_OVERLAP = 0.6


def support_problems(text: str, ids: list[str], evidence: dict[str, str], *, min_overlap: float) -> list[str]:
    """Unknown ids, and numbers, dates or words the cited facts do not carry."""
    unknown = [i for i in ids if i not in evidence]
    if unknown:
        return [f"unknown fact id(s) {', '.join(unknown)}; cite only ids listed in the articles"]
    cited = " ".join(evidence[i] for i in ids)
    problems = []
    if missing := sorted(_numbers(text) - _numbers(cited)):
        problems.append(f"the number(s) {', '.join(missing)} are not in the cited facts {', '.join(ids)}")
    if missing_months := sorted(_months(text) - _months(cited)):
        problems.append(f"the date(s) {', '.join(missing_months)} are not in the cited facts {', '.join(ids)}")
    words = _words(text)
    if words and len(words & _words(cited)) / len(words) < min_overlap:
        problems.append(f"the cited facts {', '.join(ids)} do not support this text")
    return problems


def statement_problems(text: str, ids: list[str], evidence: dict[str, str], claims: dict[str, str]) -> list[str]:
    """``support_problems`` with the fact that states the text best named, since a small model most
    often cites a neighbouring id."""
    problems = support_problems(text, ids, evidence, min_overlap=MIN_STATEMENT_OVERLAP)
    if problems:
        hint = closest(text, claims)
        if hint is not None and hint not in ids:
            problems.append(f"the fact that states it best is {hint}")
    return problems


def stating(text: str, ids: list[str], evidence: dict[str, str]) -> list[str]:
    """The cited ids that carry part of ``text`` themselves: a number of it, or some of its words.

    A small model pads a statement with the ids of the facts next to it; published, each would add a
    footnote that says something else and an outlet that does not report it. Unknown ids stay, so
    they are reported as such; if no id carries anything, all stay and the statement fails its check.
    """
    words, numbers = _words(text), _numbers(text)

    def carries(fact_id: str) -> bool:
        if fact_id not in evidence:
            return True
        if numbers & _numbers(evidence[fact_id]):
            return True
        return bool(words) and len(words & _words(evidence[fact_id])) / len(words) >= MIN_SENTENCE_SHARE

    kept = [i for i in ids if carries(i)]
    return kept or ids


def same_report(sides: list[str]) -> bool:
    """True when every pair of sides says the same thing in nearly the same words."""
    for k, first in enumerate(sides):
        for second in sides[k + 1 :]:
            a, b = _words(first), _words(second)
            na, nb = _numbers(first) | _months(first), _numbers(second) | _months(second)
            similar = len(a & b) / max(1, len(a | b)) >= SAME_SIDE_OVERLAP
            if not (similar and (na <= nb or nb <= na)):
                return False
    return True
