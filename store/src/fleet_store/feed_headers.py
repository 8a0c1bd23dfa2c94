"""The header each GTFS-realtime feed last served, shared by every ``fleet serve`` node.

A consumer may drop a feed whose header timestamp goes backwards, or one that
changed under an unchanged header; every node therefore stamps its feed
against the last stamp any node served, kept in Redis under
``fleet:{operator}:gtfsrt:{kind}``. The rule itself (which header a content
gets) is the caller's, passed in; this module only keeps the compare and the
write atomic across nodes.
"""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis
import redis.exceptions

from fleet_store.live import reply_text

STAMP_TTL_S = 86_400
"""a feed's last header is kept this long after it was served"""

Held = tuple[str, int]
"""(content digest, header timestamp in seconds) last served for a feed"""


def header_key(operator: str, kind: str) -> str:
    return f"fleet:{{{operator}}}:gtfsrt:{kind}"


class FeedHeaders:
    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    async def stamp(self, operator: str, kind: str, digest: str, decide: Callable[[Held | None], int]) -> int:
        """The header for content ``digest``: ``decide(last held)``, recorded unless already held.

        An optimistic transaction (WATCH): two nodes serving a change at once
        agree on its header, the loser recomputing from the winner's stamp.
        """
        key = header_key(operator, kind)
        async with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw_digest, raw_ts = await pipe.hmget(key, "digest", "ts")
                    held = (
                        None
                        if raw_digest is None or raw_ts is None
                        else (reply_text(raw_digest), int(raw_ts))
                    )
                    header = decide(held)
                    if held == (digest, header):
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return header
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(key, mapping={"digest": digest, "ts": header})
                    pipe.expire(key, STAMP_TTL_S)
                    await pipe.execute()
                    return header
                except redis.exceptions.WatchError:
                    continue
