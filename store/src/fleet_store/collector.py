"""How the long-running ``fleet serve`` and ``fleet ingest`` processes tune Python's cyclic garbage collector.

Serve holds many long-lived connections. Each websocket client is a few
hundred tracked objects (the protocol, its streams, tasks and futures, the
session, its queue), so 10,000 clients are millions of objects that every full
collection walks, and CPython's default thresholds (700, 10, 10) start one
whenever the survivors grew by a quarter. Measured with ``fleet bench fanout
--clients 10000`` on 2 cores: 20 full collections of 1 to 7 s each in one run
(42 s with the event loop stopped), and the server delivered 897 messages/s of
the 47,000 due. With the young generation at 50,000 allocations and full
collections after 100 middle ones, messages die young instead of being
promoted, no full collection ran in the run, and the same server delivered
40,495 messages/s.

Ingest allocates a few short-lived objects per frame (the decoded frame, its
rows and tuples), so the defaults run a young collection every few hundred
frames, and each full one walks everything start-up imported (the CLI, the
stores' clients, the processing code). Measured on a drain of 100,000
one-frame messages (a ``gc.callbacks`` hook in the ingest process, 2 cores):
1,257-1,262 collections taking 0.45-0.49 s, 0.30-0.33 s of it in 7 full
ones, against 245-253 collections and 0.07-0.18 s with these settings.

``gc.freeze()`` first moves what the process holds after start-up (modules,
the app, its routes and OpenAPI schema) out of the collector's sight for good.
Cyclic garbage is still collected, only less often: memory between collections
grows by at most the young generations' worth of objects.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 100)
"""allocations before a young collection; young ones before a middle one; middle ones before a full one"""


def tune_collector() -> None:
    """Freeze what start-up left alive and set :data:`THRESHOLDS` (call once the app is built)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
