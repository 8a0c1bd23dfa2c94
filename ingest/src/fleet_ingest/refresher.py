"""The loop that keeps a cache of the device registry fresh through PostgreSQL's outages.

The key cache and the device-token cache each follow the registry on a
connection of their own (LISTEN for announced changes, a poll for the rest).
When that connection fails they keep answering from what they hold and try
again with a backoff; a bug in a refresh is logged and retried too, since a
refresher that died would stop revocations reaching ingest without a sign.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fleet_schemas.backoff import Backoff
from fleet_store.outages import POSTGRES_UNAVAILABLE

RETRY_S = (0.5, 15.0)
"""first and longest wait between two attempts to follow the registry again"""

Session = Callable[[Callable[[], None]], Awaitable[None]]
"""follows the registry until it fails; calls its argument after each good read (resets the backoff)"""


async def keep_fresh(
    what: str,
    session: Session,
    log: logging.Logger,
    after_failure: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run ``session`` again and again, forever; ``after_failure`` drops what a failed one left open."""
    backoff = Backoff(*RETRY_S)
    while True:
        try:
            await session(backoff.reset)
            delay = backoff.next_delay()  # a session that ended by itself is tried again too
        except POSTGRES_UNAVAILABLE as exc:
            delay = backoff.next_delay()
            log.warning(
                f"{what} cannot read the registry; answering from what it holds",
                extra={"error": str(exc), "retry_in_s": round(delay, 2)},
            )
        except Exception:
            delay = backoff.next_delay()
            log.exception(f"{what} refresh failed; answering from what it holds")
        if after_failure is not None:
            await after_failure()
        await asyncio.sleep(delay)
