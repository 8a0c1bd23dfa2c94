"""``/map``: the live map's page, its bundled assets, its config, and a local PMTiles basemap.

The assets are built by ``make bundle`` into ``static/`` with a content hash in
their names, so they are cached for a year (``immutable``) and the page, which
names them, is never cached. The page needs no token to load: it asks for one,
and every API call it makes carries it.

A local PMTiles archive (``FLEET_MAP_TILES=/path/basemap.pmtiles``) is read by
the browser in byte ranges. Litestar's file responses do not answer ``Range``,
so this module does, for one range per request (what PMTiles clients send);
a request without ``Range`` gets the whole file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import anyio
import msgspec
from litestar import Response, get
from litestar.datastructures import CacheControlHeader
from litestar.enums import MediaType
from litestar.params import HeaderParameter
from litestar.response import File
from litestar.static_files import create_static_files_router

from fleet_serve.errors import ApiError, NotFound
from fleet_serve.services import ServicesDep
from fleet_serve.settings import MAP_PMTILES_PATH, MapTilesKind

STATIC_DIR = Path(__file__).parent / "static"
INDEX = STATIC_DIR / "index.html"
ASSETS_MAX_AGE_S = 365 * 86_400
MAX_RANGE_BYTES = 16 << 20
"""one range read at most (a PMTiles directory or tile is far smaller)"""

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class TilesConfig(msgspec.Struct, frozen=True, kw_only=True):
    kind: MapTilesKind
    url: str | None
    """the tile template, style or archive URL (``/map/tiles.pmtiles`` for a local archive)"""
    attribution: str | None = None


class MapConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What the page reads before it draws: the basemap (no secret in it)."""

    tiles: TilesConfig


@get("/map", include_in_schema=False, sync_to_thread=False)
def map_page() -> Response[bytes]:
    """The page (503 ``map_not_built`` when ``make bundle`` has not run)."""
    if not INDEX.is_file():
        raise ApiError(
            "the map bundle is not built: run `make bundle` (npm ci and the esbuild build)",
            code="map_not_built",
            status=503,
        )
    return Response(
        content=INDEX.read_bytes(),
        media_type=MediaType.HTML,  # Litestar adds the charset itself
        headers={
            "Cache-Control": "no-cache",
            # the page and everything it loads come from this server; websockets to it too
            "Content-Security-Policy": (
                "default-src 'self'; img-src 'self' data: blob:; worker-src 'self' blob:;"
                " connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'"
            ),
        },
    )


@get("/map/config.json", include_in_schema=False, sync_to_thread=False)
def map_config(services: ServicesDep) -> MapConfig:
    tiles = services.settings.map_tiles
    return MapConfig(tiles=TilesConfig(kind=tiles.kind, url=tiles.url))


@get(MAP_PMTILES_PATH, include_in_schema=False)
async def map_pmtiles(
    services: ServicesDep,
    range_header: Annotated[str | None, HeaderParameter(name="range")] = None,
) -> Response[bytes] | File:
    """The local PMTiles archive: 206 for one byte range, 416 for one outside the file."""
    path = services.settings.map_tiles.file
    if path is None:
        raise NotFound("no local PMTiles archive is configured (FLEET_MAP_TILES)", code="tiles_not_found")
    size = os.stat(path).st_size
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "public, max-age=3600"}
    if range_header is None:
        return File(
            path, media_type="application/octet-stream", headers=headers, content_disposition_type="inline"
        )
    span = byte_range(range_header, size)
    if span is None:
        return Response(
            content=b"",
            status_code=416,
            headers={**headers, "Content-Range": f"bytes */{size}"},
        )
    start, end = span
    async with await anyio.open_file(path, "rb") as f:
        await f.seek(start)
        body = await f.read(end - start + 1)
    return Response(
        content=body,
        status_code=206,
        media_type="application/octet-stream",
        headers={**headers, "Content-Range": f"bytes {start}-{end}/{size}"},
    )


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """RFC 9110 section 14.1.2 for one range: ``(first, last)`` inclusive, None when unsatisfiable.

    ``bytes=a-b`` (``b`` cut to the file), ``bytes=a-`` and ``bytes=-n`` (the last n bytes);
    several ranges, or more than :data:`MAX_RANGE_BYTES`, are refused (None) rather than
    answered whole.
    """
    match = _RANGE.fullmatch(header.strip())
    if match is None or size == 0:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        start, end = max(0, size - int(last)), size - 1
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start or end - start + 1 > MAX_RANGE_BYTES:
        return None
    return start, end


static_router = create_static_files_router(
    path="/map/static",
    directories=[STATIC_DIR],
    cache_control=CacheControlHeader(max_age=ASSETS_MAX_AGE_S, public=True, immutable=True),
    include_in_schema=False,
    name="map-static",
)

ROUTES = [map_page, map_config, map_pmtiles, static_router]
