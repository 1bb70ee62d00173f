"""disagree: points on which outlets contradict each other, found in their own sentences (pure).

The model is not asked to notice contradictions; a small one never does. Each sentence of each
article is read for claims of a kind an editor checks: an amount, a percentage, a count, a date
(relative ones resolved against the article's publication date), a person's title, a person's
former employers, or a figure kept undisclosed. Claims of the same kind about the same subject
(the same person, or the same money word beside the same name) from different outlets that give
different values become a disagreement, each side with its outlets and exact sentences. An
article that copies another (``align.copies_of``) is never set against it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

from schemas import PreparedArticle
from service.pipeline.verify import MONTHS

_MONEY_NOUNS = (
    "stake investment invest invested investing deal acquisition acquire acquired buy bought purchase price "
    "valuation valued valuing value worth contract award awarded budget cost costs fine fined penalty fee fees "
    "bid offer funding round raise raised loan settlement damages salary compensation revenue sale sold grant "
    "pay paid paying charge charges write-down severance adquirir adquisición compra precio valoración inversión "
    "contrato übernahme kauf kaufpreis preis bewertung investition vertrag"
).split()
_NOUN_FAMILY = {
    "valued": "valuation", "valuing": "valuation", "value": "valuation", "worth": "valuation",
    "invest": "investment", "invested": "investment", "investing": "investment",
    "acquire": "acquisition", "acquired": "acquisition", "buy": "acquisition", "bought": "acquisition",
    "purchase": "acquisition", "award": "contract", "awarded": "contract", "costs": "cost", "fined": "fine",
    "penalty": "fine", "fees": "fee", "raise": "funding", "raised": "funding", "round": "funding",
    "sold": "sale", "compensation": "salary", "pay": "acquisition", "paid": "acquisition", "paying": "acquisition",
    "price": "acquisition", "deal": "acquisition", "charge": "cost", "charges": "cost", "write-down": "cost",
    "severance": "cost", "adquirir": "acquisition", "adquisición": "acquisition", "compra": "acquisition",
    "precio": "acquisition", "valoración": "valuation", "inversión": "investment", "contrato": "contract",
    "übernahme": "acquisition", "kauf": "acquisition", "kaufpreis": "acquisition", "preis": "acquisition",
    "bewertung": "valuation", "investition": "investment", "vertrag": "contract", "bids": "bids", "bidders": "bids",
    "workers": "jobs", "employees": "jobs", "staff": "jobs", "staffers": "jobs", "positions": "jobs",
    "empleados": "jobs", "trabajadores": "jobs", "mitarbeiter": "jobs",
}
_WORD_NUMBERS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
#: Capitalised words that name no one: calendar words and the pronouns and articles that start a sentence.
_NOT_NAMES = frozenset(
    "january february march april may june july august september october november december monday tuesday "
    "wednesday thursday friday saturday sunday the a an he she it they we i this that these those his her its "
    "their in on at for and but or if as ceo coo cfo cto".split()
)
_SCALE = {"billion": 1e9, "bn": 1e9, "b": 1e9, "milliarde": 1e9, "milliarden": 1e9, "mil millones": 1e9,
          "million": 1e6, "millionen": 1e6, "millones": 1e6, "mio": 1e6, "m": 1e6, "thousand": 1e3, "k": 1e3}
_AMOUNT = re.compile(
    r"(?P<cur>US\$|\$|€|£|¥)\s?(?P<num>\d[\d,.]*)\s*(?P<scale>billion|bn|million|thousand|mil millones|millones|"
    r"milliarden|milliarde|millionen|mio\.?|[bmk]\b)?"
    r"|(?P<num2>\d[\d,.]*)\s*(?P<scale2>billion|million|mil millones|millones|milliarden|milliarde|millionen|mio\.?)"
    r"\s*(?:de\s+)?(?P<cur2>dollars|dólares|euros?|pounds|libras|dollar)",
    re.IGNORECASE,
)
_PERCENT = re.compile(r"(?P<num>\d[\d,.]*)\s?(?:%|percent\b|per cent\b|por ciento\b|prozent\b)", re.IGNORECASE)
_COUNT = re.compile(r"\b(?P<num>\d[\d,]*|" + "|".join(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split()) + r")\s+(?:[a-z-]+\s+)?(?P<noun>employees|workers|jobs|staff|"
                    r"staffers|people|bids|bidders|offers|"
                    r"members|engineers|researchers|stores|plants|homes|units|vehicles|passengers|patients|"
                    r"residents|trucks|buses|beds|seats|apartments|empleados|trabajadores|mitarbeiter)\b",
                    re.IGNORECASE)
_UNDISCLOSED = re.compile(r"undisclosed|did not disclose|didn't disclose|not disclosed|declined to (?:disclose|say)|"
                          r"were not made public|was not made public|without disclosing|no se revel|nicht bekannt|"
                          r"did not reveal|not been disclosed", re.IGNORECASE)
_ROLE = re.compile(r"\b(?P<mod>interim|acting|former|deputy|co-|outgoing|incoming|new)?\s*(?P<role>chief executive"
                   r"(?: officer)?|ceo|chief financial officer|cfo|chief operating officer|coo|chief technology "
                   r"officer|cto|president|chairman|chairwoman|chair|managing director|executive director|director|"
                   r"head coach|coach|mayor|minister|commissioner|spokesperson|spokesman|spokeswoman|founder)\b",
                   re.IGNORECASE)
_ROLE_SAME = {"chief executive": "ceo", "chief executive officer": "ceo", "chief financial officer": "cfo",
              "chief operating officer": "coo", "chief technology officer": "cto", "chairman": "chair",
              "chairwoman": "chair", "spokesman": "spokesperson", "spokeswoman": "spokesperson"}
_BACKGROUND = re.compile(r"\b(?:formerly|previously|former|ex-|veteran of|spent \w+ years? at|worked at|worked for|"
                         r"earlier career at|alum(?:nus|na)? of|came from|joins from|joined from|stints? at|"
                         r"experience at|procedente de|anteriormente|zuvor bei|früher bei)", re.IGNORECASE)
_MONTH = "|".join(MONTHS)
_DATE = re.compile(r"\b(?P<month>" + _MONTH + r")\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?(?:,?\s+(?P<year>\d{4}))?"
                   r"|\b(?P<day2>\d{1,2})\s+(?P<month2>" + _MONTH + r")(?:\s+(?P<year2>\d{4}))?",
                   re.IGNORECASE)
_WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
_RELATIVE = re.compile(r"\b(?P<rel>yesterday|today|tomorrow|(?:(?:on|last|this|next)\s+)?(?:" + "|".join(_WEEKDAYS)
                       + r"))\b", re.IGNORECASE)
_EVENT_WORDS = re.compile(r"\b(announc\w*|vot\w*|approv\w*|sign\w*|clos\w*|complet\w*|rul\w*|launch\w*|open\w*|"
                          r"resign\w*|appoint\w*|award\w*|file\w*|agree\w*|unveil\w*|start\w*|begin\w*|began)\b",
                          re.IGNORECASE)


@dataclass(frozen=True)
class Claim:
    """One value an article gives for one subject, and where it gives it."""

    kind: str
    subject: str
    value: str  # comparable form
    says: str  # as written, for the editor
    article: int
    sentence: int


@dataclass(frozen=True)
class Found:
    """A disagreement: subject, kind, and per side the value and the (article, sentence) pairs."""

    kind: str
    subject: str
    sides: list[tuple[str, list[tuple[int, int]]]]


def _number(raw: str, decimal_comma: bool) -> float | None:
    raw = raw.rstrip(".,")
    raw = raw.replace(".", "").replace(",", ".") if decimal_comma else raw.replace(",", "")
    try:
        return float(raw)
    except ValueError:
        return None


def _nearest(words: list[tuple[int, str]], at: int, vocabulary: set[str], reach: int = 60) -> str | None:
    best = min(((abs(pos - at), w) for pos, w in words if w in vocabulary and abs(pos - at) <= reach), default=None)
    return _NOUN_FAMILY.get(best[1], best[1]) if best else None


def _resolve(text: str, published: date | None) -> set[date]:
    found: set[date] = set()
    for m in _DATE.finditer(text):
        month = MONTHS.index((m.group("month") or m.group("month2")).lower()) + 1
        day = int(m.group("day") or m.group("day2"))
        year = m.group("year") or m.group("year2")
        year_n = int(year) if year else (published.year if published else None)
        if year_n and 1 <= day <= 31:
            try:
                found.add(date(year_n, month, day))
            except ValueError:
                continue
    if published is not None:
        for m in _RELATIVE.finditer(text):
            rel = m.group("rel").lower().split()
            word = rel[-1]
            if word in ("yesterday", "today", "tomorrow"):
                found.add(published + timedelta(days={"yesterday": -1, "today": 0, "tomorrow": 1}[word]))
                continue
            back = (published.weekday() - _WEEKDAYS.index(word)) % 7
            found.add(published + timedelta(days=(7 - back) % 7 if rel[0] == "next" else -back))
    return found


def _names(text: str) -> list[tuple[int, str]]:
    """(position, folded name) of the capitalised words after the sentence's first, possessives dropped."""
    found = []
    for m in re.finditer(r"\b[A-Z][\w'’&-]*[A-Za-zÀ-ÿ](?:\s+[A-Z][\w'’&-]*[A-Za-zÀ-ÿ])*", text):
        name = re.sub(r"['’]s$", "", m.group()).casefold()
        words = [w for w in name.split() if w not in _NOT_NAMES and len(w) > 1]
        if words:
            found.append((m.start(), " ".join(words)))
    return found


def _nearest_name(names: list[tuple[int, str]], at: int) -> str | None:
    best = min(names, key=lambda item: abs(item[0] - at), default=None)
    return best[1].split()[0] if best else None


def claims_in(n: int, article: PreparedArticle) -> list[Claim]:
    """Every comparable claim in the article's sentences."""
    decimal_comma = (article.language or "en")[:2].lower() in ("de", "es", "fr", "it", "pt", "nl")
    published = article.published_at.date() if article.published_at else None
    money = set(_MONEY_NOUNS)
    found: list[Claim] = []
    english = (article.language or "en")[:2].lower() == "en"
    for s in article.sentences:
        text = s.text
        words = [(m.start(), m.group().lower()) for m in re.finditer(r"[\w-]+", text)]
        names = _names(text)
        for m in _AMOUNT.finditer(text):
            value = _number(m.group("num") or m.group("num2"), decimal_comma)
            noun = _nearest(words, m.start(), money)
            name = _nearest_name(names, m.start())
            if value is not None and noun and name:
                scale = (m.group("scale") or m.group("scale2") or "").lower().rstrip(".")
                amount = value * _SCALE.get(scale, 1)
                found.append(Claim("amount", f"{name}/{noun}", f"{amount:.4g}", m.group().strip(), n, s.n))
        if (hidden := _UNDISCLOSED.search(text)) and (noun := _nearest(words, hidden.start(), money | {"terms"}, 80)):
            found.append(Claim("amount", f"*/{noun}", "undisclosed", hidden.group(), n, s.n))
        for m in _PERCENT.finditer(text):
            value = _number(m.group("num"), decimal_comma)
            noun = _nearest(words, m.start(), {"stake", "share", "shares", "ownership", "rate", "tax", "increase",
                                               "cut", "rise", "raise", "discount", "participación", "anteil"})
            name = _nearest_name(names, m.start())
            if value is not None and noun and name:
                found.append(Claim("percent", f"{name}/{noun}", f"{value:g}", m.group().strip(), n, s.n))
        for m in _COUNT.finditer(text):
            raw = m.group("num").lower()
            value = float(_WORD_NUMBERS[raw]) if raw in _WORD_NUMBERS else _number(raw, False)
            noun = m.group("noun").lower()
            name = _nearest_name(names, m.start())
            if value is not None and value >= 2 and name:
                found.append(Claim("count", f"{name}/{_NOUN_FAMILY.get(noun, noun)}", f"{value:g}",
                                   m.group().strip(), n, s.n))
        if english:  # role words are English; "mayor" is "larger" in Spanish
            found += _people_claims(n, s.n, text)
        else:
            found += [c for c in _people_claims(n, s.n, text) if c.kind == "employer"]
        dates = _resolve(text, published)
        events = {e.group(1).lower()[:5] for e in _EVENT_WORDS.finditer(text)}
        if len(dates) == 1 and events:
            (day,) = dates
            for _, name in names:
                for event in events:
                    found.append(Claim("date", f"{name.split()[0]}/{event}", day.isoformat(),
                                       f"{day:%B} {day.day}, {day.year}", n, s.n))
    return found


def _people_claims(n: int, sentence: int, text: str) -> list[Claim]:
    """Titles and former employers, attached to the person named nearest before them."""
    people: list[tuple[int, str]] = []
    organisation = False  # names after "at", "of", "from"... and those joined to them by "and" are not people
    for at, name in _names(text):
        lead = text[max(0, at - 6): at]
        organisation = bool(re.search(r"\b(?:at|of|from|for|like|with|de|del|bei|von)\s+$", lead, re.I)
                            or (organisation and re.search(r"\b(?:and|or|y|und)\s+$", lead, re.I)))
        possessive = re.match(r"[\w&-]+(?:\s+[A-Z][\w&-]*)*['’]s\b", text[at:])
        if not organisation and not possessive:
            people.append((at, name.split()[-1]))
    if not people:
        return []

    def person_before(at: int) -> str | None:
        after = re.match(r"\s+([A-Z][\w'’-]+)\s+([A-Z][\w'’-]+)", text[at:])
        if after:
            return re.sub(r"['’]s$", "", after.group(2)).casefold()
        before = [p for p in people if p[0] < at]
        return before[-1][1] if before else None

    found = []
    for m in _ROLE.finditer(text):
        mod = (m.group("mod") or "").lower()
        role = _ROLE_SAME.get(m.group("role").lower(), m.group("role").lower())
        prior = text[max(0, m.start() - 60): m.start()].lower()
        past = re.search(r"\b(?:was|were|had been|once)\s+(?:the\s+)?$", prior)
        if mod in ("former", "outgoing", "new", "incoming") or role == "founder" or past \
                or _BACKGROUND.search(re.split(r"[,;—–(]", prior)[-1]):
            continue
        if person := person_before(m.end()):
            found.append(Claim("title", person, f"{mod} {role}".strip(), m.group().strip(), n, sentence))
    for m in _BACKGROUND.finditer(text):
        window = re.split(r"[,;—–()]| - ", text[m.end(): m.end() + 90])[0]
        orgs = sorted({name for _, name in _names(" x " + window)} - {p for _, p in people[:1]})
        person = person_before(m.start())
        if person and orgs:
            found.append(Claim("employer", person, " and ".join(orgs), (m.group() + window).strip(), n, sentence))
    return found


def _first_values(claims: list[Claim]) -> list[Claim]:
    """An article's claims on one subject from the first sentence that makes one: its main statement of it."""
    first = min(c.sentence for c in claims)
    return [c for c in claims if c.sentence == first]


def disagreements(articles: list[PreparedArticle], copies: dict[int, int] | None = None) -> list[Found]:
    """Contradictions between outlets, each side's sentences listed; articles numbered from 1."""
    copies = copies or {}
    by_subject: dict[tuple[str, str], dict[int, list[Claim]]] = defaultdict(lambda: defaultdict(list))
    everywhere = _names_in_every(articles)
    for n, article in enumerate(articles, 1):
        if n in copies:
            continue
        for claim in claims_in(n, article):
            if claim.kind == "employer":
                kept = [o for o in claim.value.split(" and ") if o not in everywhere]
                if not kept:
                    continue
                claim = Claim(claim.kind, claim.subject, " and ".join(kept), claim.says, claim.article, claim.sentence)
            by_subject[(claim.kind, claim.subject)][n].append(claim)
    # A figure kept undisclosed is about whatever the other outlets price with the same word.
    for (kind, subject), per_article in list(by_subject.items()):
        if not subject.startswith("*/"):
            continue
        noun = subject[2:]
        for (other_kind, other_subject), figures in list(by_subject.items()):
            if other_kind == kind and other_subject.endswith("/" + noun) and other_subject != subject:
                for n, claims in per_article.items():
                    if n not in figures:
                        figures[n] = claims
    found: list[Found] = []
    seen: set[frozenset[tuple[int, int]]] = set()
    for (kind, subject), per_article in by_subject.items():
        if subject.startswith("*/") or len({articles[n - 1].outlet for n in per_article}) < 2:
            continue
        firsts = {n: _first_values(claims) for n, claims in per_article.items()}
        values = {frozenset(c.value for c in claims) for claims in firsts.values()}
        if len(values) < 2 or any(a & b for a in values for b in values if a != b):
            continue  # one account, or accounts that overlap: nothing an editor must weigh
        sides: dict[str, list[tuple[int, int]]] = defaultdict(list)
        says: dict[str, str] = {}
        for claims in firsts.values():
            value = " / ".join(sorted({c.value for c in claims}))
            sides[value] += [(c.article, c.sentence) for c in claims]
            says.setdefault(value, claims[0].says)
        key = frozenset(pair for pairs in sides.values() for pair in pairs)
        if key in seen:
            continue
        seen.add(key)
        found.append(Found(kind, subject, [(says[v], sorted(set(pairs))) for v, pairs in sides.items()]))
    return found


def _names_in_every(articles: list[PreparedArticle]) -> set[str]:
    """Names every article uses: the story's own protagonists, never someone's former employer."""
    sets = [{name for s in a.sentences for _, name in _names(s.text)} for a in articles]
    return set.intersection(*sets) if len(sets) > 1 else set()
