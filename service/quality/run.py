"""Run a gold story through the pipeline with a model and score the digest (``newsdigest eval``).

The same code runs offline, replaying the cassettes recorded from the embedded model (the
pytest suite does that, with thresholds), and live against any endpoint the settings name.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from schemas import Digest, Extraction, Source
from service.llm.port import Completer
from service.pipeline.story import StoryArticle, StoryOptions, digest_story, prepare_all
from service.prompts import Prompt
from service.quality.gold import load_story
from service.quality.score import StoryScore, score


class _Recorder:
    """A story store that keeps nothing but the analyses, for the score's counts."""

    def __init__(self) -> None:
        self.extractions: list[Extraction] = []

    async def analysis(self, article: StoryArticle, run: Callable[[], Awaitable[Extraction]]) -> Extraction:
        extraction = await run()
        self.extractions.append(extraction)
        return extraction

    async def digest(self, extractions: list[Extraction], failed: list[Source],
                     run: Callable[[], Awaitable[Digest]]) -> Digest:
        return await run()


async def evaluate(directory: Path, prompts: dict[str, Prompt], llm: Completer, options: StoryOptions, *,
                   max_chars: int) -> tuple[StoryScore, Digest]:
    story = load_story(directory)
    ready, failed = prepare_all(list(story.articles.values()), max_chars=max_chars)
    recorder = _Recorder()
    started = time.monotonic()
    digest = await digest_story(ready, prompts, llm, options, failed=failed, store=recorder)
    seconds = time.monotonic() - started
    articles = {a.article_id or "": a.prepared for a in ready}
    return score(story.gold, digest, articles, recorder.extractions, seconds=seconds), digest
