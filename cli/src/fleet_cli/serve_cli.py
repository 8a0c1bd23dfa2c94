"""``fleet serve``: the HTTP API, websocket fan-out and GTFS-realtime feeds of one node."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, TextIO

import click

from fleet_store import stackfile
from fleet_store.settings import Settings

if TYPE_CHECKING:
    from litestar import Litestar

    from fleet_serve.settings import ServeSettings


@click.command()
@click.option("--addr", help="host:port to listen on (default FLEET_SERVE_ADDR, 127.0.0.1:8080)")
@click.option(
    "--openapi",
    "openapi_file",
    type=click.File("w"),
    help="write the OpenAPI document to this file ('-': stdout) and exit, serving nothing",
)
@click.pass_obj
def serve(settings: Settings, addr: str | None, openapi_file: TextIO | None) -> None:
    """Serve /v1 (HTTP API and /v1/live websocket), /gtfs-rt and /healthz, /readyz.

    Stateless: run as many as the load needs behind a load balancer; every
    node reads the same Redis and PostgreSQL. SIGTERM finishes the requests
    in hand and closes the websockets.

    \b
    Example:
      fleet serve
      FLEET_SERVE_ADDR=0.0.0.0:8080 fleet serve
      fleet serve --addr 127.0.0.1:9000
      fleet serve --openapi serve/openapi.json   # after changing the API
    """
    from fleet_schemas.logs import configure_logging
    from fleet_serve.app import create_app
    from fleet_serve.live import HideTokens
    from fleet_serve.settings import load_serve_settings

    if openapi_file is not None:
        from fleet_serve.app import openapi_text

        openapi_file.write(openapi_text())
        return
    configure_logging(settings.log_level)
    logging.getLogger("uvicorn.error").addFilter(HideTokens())
    env = None if addr is None else {**os.environ, "FLEET_SERVE_ADDR": addr}
    serve_settings = load_serve_settings(env)
    urls = stackfile.resolve_urls(settings)
    run_app(create_app(serve_settings, urls.redis_url, urls.database_url), serve_settings)


def run_app(app: Litestar, serve_settings: ServeSettings) -> None:
    """Serve ``app`` as ``fleet serve`` does: one uvicorn process (uvloop, httptools), graceful stop,
    the garbage collector tuned for many connections (``fleet_store.collector``).

    uvloop and httptools named, not left to ``auto``: without them uvicorn falls back to asyncio's
    loop and the pure-Python h11 parser, and a node answers a few times fewer requests.
    """
    import uvicorn

    from fleet_serve.settings import uvicorn_options
    from fleet_store.collector import tune_collector

    tune_collector()

    uvicorn.run(
        app,
        host=serve_settings.host,
        port=serve_settings.port,
        loop="uvloop",
        http="httptools",
        **uvicorn_options(serve_settings),
    )
