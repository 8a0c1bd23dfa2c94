"""``fleet demo screenshot``: the README's picture of the live map, taken from a running demo.

Debian's Chromium, driven by Python playwright (``executable_path`` given,
never ``playwright install``), renders the page in software (SwiftShader
WebGL). The page is opened with the demo's manager token once every bus is
live, given time to draw them all, and captured; console errors and page
errors are collected and returned, so a broken page does not make a picture
silently.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from fleet_store.errors import FleetError

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--no-first-run",
)
WIDTH, HEIGHT = 1280, 800
AROUND_ALGIERS = "2.7,36.35,3.45,36.8"
"""the box shown (west, south, east, north): Algiers to Blida, where four of the five lines run, zoomed
in past the map's clustering (zoom 8 and under) so each bus shows in its status color"""
WAIT_MS = 60_000
"""how long the page may take to load and show the buses (software rendering on a loaded machine)"""


class ScreenshotError(FleetError):
    """The picture cannot be taken; ``code`` is stable."""

    code = "screenshot_failed"


class Shot(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    buses_drawn: int
    errors: tuple[str, ...]


def take(map_url: str, out: Path, *, settle_s: float = 10.0) -> Shot:
    """Open ``map_url`` on the box around Algiers, wait for buses plus ``settle_s``, save a PNG at ``out``."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:  # a dev dependency: the workspace's `uv sync` installs it
        raise ScreenshotError("playwright is not installed here: run `uv sync` in the workspace") from exc

    errors: list[str] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
            page.goto(f"{map_url}&bbox={AROUND_ALGIERS}")
            page.wait_for_function("() => window.fleetMap && window.fleetMap.ready", timeout=WAIT_MS)
            # the page follows the buses of the box it shows: some of the demo's, not all
            page.wait_for_function("() => window.fleetMap.buses().length > 0", timeout=WAIT_MS)
            page.wait_for_timeout(settle_s * 1000)
            drawn = int(page.evaluate("() => window.fleetMap.buses().length"))
            page.screenshot(path=str(out))
        except Error as exc:  # a timeout included: the page never got ready or never showed the buses
            raise ScreenshotError(
                f"the map page: {exc.message}; {'; '.join(errors) or 'no page errors'}"
            ) from exc
        finally:
            browser.close()
    return Shot(path=str(out), buses_drawn=drawn, errors=tuple(errors))
