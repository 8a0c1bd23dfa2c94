"""The fuzz corpus replays: each input ends as its index says, through the broker into a real ingest.

``tests/fuzz_corpus`` holds what ``fleet bench fuzz --corpus`` found worth
keeping (the first input of each new outcome: every rejection reason, each
way msgspec names a bad field, stored frames beside rejected ones), signed
with the fuzz identities' published keys. Rebuild it with
``uv run fleet bench fuzz --payloads 100000 --corpus tests/fuzz_corpus`` and
say why in the commit.
"""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import pytest

from fleet_devtools import fuzz_corpus
from fleet_store.settings import ServiceUrls

pytestmark = pytest.mark.stack

CORPUS = Path(__file__).parent / "fuzz_corpus"


def test_every_corpus_input_ends_stored_or_rejected_as_its_index_says(
    stack_urls: ServiceUrls, database_url: str, redis_url: str
) -> None:
    index, raws = fuzz_corpus.load(CORPUS)
    messages = [(entry.topic, raw) for entry, raw in zip(index.entries, raws, strict=True)]
    kek = base64.b64encode(os.urandom(32)).decode()

    got = asyncio.run(
        fuzz_corpus.replay(stack_urls.mqtt_url, database_url, redis_url, kek, messages, index.written_at_ms)
    )

    differ = [
        f"{entry.file} ({entry.kind}): expected {entry.outcome}, got {outcome}"
        for entry, outcome in zip(index.entries, got, strict=True)
        if outcome != entry.outcome
    ]
    assert not differ, "\n".join(differ)
    assert len({word for entry in index.entries for word in entry.outcome}) >= 10, "the corpus lost its range"
