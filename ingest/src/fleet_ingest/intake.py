"""Requests into the ingest pipeline in micro-batches, each answered once its batch is committed.

The HTTP front hands every authenticated request to :meth:`Intake.submit` as
one :class:`~fleet_ingest.assess.Incoming` message and awaits its
:class:`Verdict`. One loop takes what is waiting (up to ``batch_max``) and runs
it through :meth:`fleet_ingest.service.Ingest.take_in` as the MQTT consumer's
batches are: so requests arriving together share a transaction, and the
pipeline sees one batch at a time, as it was written for. When the database
stays down the whole batch fails with ``StoreUnavailable`` and every request in
it is answered 503: nothing was acknowledged, and the apps send it again.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec

from fleet_ingest import metrics
from fleet_ingest.assess import Incoming
from fleet_ingest.service import Ingest, StoreUnavailable, Taken

log = logging.getLogger("fleet_ingest.intake")


class Busy(Exception):
    """More requests wait than the intake holds; answer 503 and let the app retry."""


class Rejection(msgspec.Struct, frozen=True):
    reason: str
    detail: str
    seq: int | None


class Verdict(msgspec.Struct, frozen=True):
    """What became of one request's message."""

    accepted: int
    """frames that passed the checks (new or already stored)"""
    stored: int
    """frames stored for the first time"""
    rejected: list[Rejection]
    refused_whole: bool
    """the message itself was rejected (undecodable, bad signature...): no frame was looked at"""


class Intake:
    """Batches submitted messages into the pipeline; run :meth:`run` beside the web server."""

    def __init__(self, ingest: Ingest, batch_max: int = 500, waiting_max: int = 10_000) -> None:
        self._ingest = ingest
        self._batch_max = batch_max
        self._queue: asyncio.Queue[tuple[Incoming, asyncio.Future[Verdict]]] = asyncio.Queue(waiting_max)

    async def submit(self, message: Incoming) -> Verdict:
        """Wait until the message is committed (or refused); raises StoreUnavailable or Busy."""
        answer: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((message, answer))
        except asyncio.QueueFull:
            raise Busy(f"{self._queue.qsize()} requests are waiting") from None
        metrics.HTTP_WAITING.inc()
        try:
            return await answer
        finally:
            metrics.HTTP_WAITING.dec()

    async def run(self, stop: asyncio.Event) -> None:
        """Take batches until ``stop``; what is still waiting then is answered StoreUnavailable."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                first = asyncio.ensure_future(self._queue.get())
                await asyncio.wait([first, stopping], return_when=asyncio.FIRST_COMPLETED)
                if not first.done():
                    first.cancel()
                    break
                batch = [first.result()]
                while len(batch) < self._batch_max and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                await self._take(batch)
        finally:
            stopping.cancel()
            while not self._queue.empty():
                _, answer = self._queue.get_nowait()
                if not answer.done():
                    answer.set_exception(StoreUnavailable("ingest (stopping)"))

    async def _take(self, batch: list[tuple[Incoming, asyncio.Future[Verdict]]]) -> None:
        try:
            taken = await self._ingest.take_in([message for message, _ in batch])
        except StoreUnavailable as exc:
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(StoreUnavailable(exc.store))
            return
        except Exception as exc:
            log.exception("a batch of requests failed", extra={"requests": len(batch)})
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for index, (_, answer) in enumerate(batch):
            if not answer.done():
                answer.set_result(_verdict(taken, index))


def _verdict(taken: Taken, index: int) -> Verdict:
    accepted = [a for a in taken.outcome.accepted if a.message == index]
    refused = [r for r in taken.stored.refused if r.message == index]
    rejected = [r for r in taken.outcome.rejected if r.message == index] + refused
    whole = index in taken.stored.dropped or any(r.seq is None for r in rejected)
    refused_keys = {(r.device, r.seq) for r in refused}
    kept = [a for a in accepted if (a.frame.device, a.frame.seq) not in refused_keys]
    return Verdict(
        accepted=0 if whole else len(kept),
        stored=sum((a.frame.device, a.frame.seq) in taken.stored.new for a in kept),
        rejected=[Rejection(r.reason, r.detail, r.seq) for r in rejected],
        refused_whole=whole,
    )
