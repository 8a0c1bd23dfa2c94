"""Mutated GTFS feeds, as broken exports and hand edits make them, for the importer's property tests.

Files are kept as bytes and decoded as ``fleet gtfs import`` decodes them
(``utf-8-sig``, ``newline=""``), so decoding errors happen where they happen in
production: files dropped, columns dropped, cells garbled (empty, not
numbers, past 64 bits, times past 99 h, NUL, quotes, right-to-left marks,
200,000-character values), byte-order marks, an encoding that is not UTF-8,
files cut short, an unterminated quote.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from hypothesis import strategies as st

ENCODING = "utf-8-sig"
"""as fleet_cli.gtfs_source opens feed files"""

Files = dict[str, bytes]


def load(folder: Path, rows: int | None = None) -> Files:
    files = {}
    for path in sorted(folder.glob("*.txt")):
        data = path.read_bytes()
        if rows is not None:
            data = b"".join(data.splitlines(keepends=True)[: rows + 1])
        files[path.name] = data
    return files


GARBLED = (
    "",
    " ",
    "NaN",
    "-1",
    "1e309",
    "99:99:99",
    "25:61:00",
    "2026-13-45",
    "\x00",
    '"',
    "\u202e\u0645",
    "x" * 200_000,
    "0x10",
    "٣",
    "99999999999999999999",
    "2147483648",
    "-9223372036854775809",
    "1e300",
)


def table(data: bytes) -> list[list[str]]:
    """The file's rows; none when csv cannot read it (a mutation made it so: later ones skip it)."""
    try:
        return list(csv.reader(io.StringIO(data.decode("utf-8-sig", "replace"), newline="")))
    except csv.Error:
        return []


def write(rows: list[list[str]]) -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode()


@st.composite
def mutations(draw: st.DrawFn, original: Files) -> Files:
    files = dict(original)
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(sorted(files)))
        rows = table(files[name])
        kind = draw(
            st.sampled_from(["drop_file", "drop_column", "garble", "bom", "encoding", "cut", "quote"])
        )
        if kind == "drop_file":
            del files[name]
            if not files:
                break
            continue
        if kind == "drop_column" and rows and rows[0]:
            column = draw(st.integers(0, len(rows[0]) - 1))
            files[name] = write([r[:column] + r[column + 1 :] for r in rows])
        elif kind == "garble" and len(rows) > 1:
            for _ in range(draw(st.integers(1, 5))):
                row = rows[draw(st.integers(1, len(rows) - 1))]
                if row:
                    row[draw(st.integers(0, len(row) - 1))] = draw(
                        st.sampled_from(GARBLED) | st.text(max_size=12)
                    )
            files[name] = write(rows)
        elif kind == "bom":
            files[name] = "\ufeff".encode() * draw(st.integers(1, 2)) + files[name]
        elif kind == "encoding":
            text = files[name].decode("utf-8", "replace")
            files[name] = text.encode(draw(st.sampled_from(["utf-16", "latin-1", "cp1256"])), "replace")
        elif kind == "cut":
            files[name] = files[name][: draw(st.integers(0, len(files[name])))]
        elif kind == "quote":
            at = draw(st.integers(0, len(files[name])))
            files[name] = files[name][:at] + b'"' + files[name][at:]
    return files


def opener(files: Files) -> Callable[[str], TextIO | None]:
    def open_file(name: str) -> TextIO | None:
        data = files.get(name)
        return None if data is None else io.TextIOWrapper(io.BytesIO(data), encoding=ENCODING, newline="")

    return open_file
