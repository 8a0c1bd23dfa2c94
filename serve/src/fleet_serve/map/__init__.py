"""The fleet manager's live map: the page and its assets (:mod:`.page`), the layers it draws (:mod:`.layers`).

The page itself is built from ``serve/map-ui`` (``make bundle``) into ``static/``, which the
wheel ships; nothing is fetched from elsewhere at run time.
"""
