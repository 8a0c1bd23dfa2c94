"""A real uvicorn server around a ``fleet serve`` app, in a thread of the test process.

The same server and websocket implementation ``fleet serve`` runs
(uvicorn, ``ws="websockets"``), on a free port; the test talks to it over
real sockets, and may look at the app's state from its own thread.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from litestar import Litestar

from fleet_serve.settings import ServeSettings, uvicorn_options

STARTUP_S = 30.0
"""give up (and fail) if the server is not listening by then"""


@contextmanager
def serving(app: Litestar, settings: ServeSettings) -> Iterator[str]:
    """Serve ``app`` as ``fleet serve`` would with ``settings``; yields its base URL (``http://127.0.0.1:PORT``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, **uvicorn_options(settings))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start (see its log above)")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(STARTUP_S)
        sock.close()
