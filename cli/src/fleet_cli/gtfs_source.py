"""A GTFS feed on disk, zip or folder, opened file by file for the pure reader, with its SHA-256.

The reader (``fleet_processing.gtfs``) does no I/O; this is where the files
are opened: as UTF-8 with an optional byte-order mark (``utf-8-sig``) and
``newline=""`` so the csv module sees CRLF and quoted newlines as written.
A zip whose files sit in one folder inside it is read from that folder.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from fleet_processing.gtfs.csvfiles import OpenFile
from fleet_store.errors import FeedSourceError

ENCODING = "utf-8-sig"


@dataclass(frozen=True)
class FeedSource:
    name: str
    sha256: str
    """of the zip's bytes, or of a folder's .txt files (names and contents, in name order)"""
    open_file: OpenFile


@contextmanager
def open_source(path: Path) -> Iterator[FeedSource]:
    """The feed at ``path`` (a .zip or a folder of .txt files); FeedSourceError when it cannot be read."""
    if path.is_dir():
        yield _folder(path)
        return
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise FeedSourceError(f"{path} is neither a folder nor a readable zip: {exc}") from exc
    with archive:
        yield FeedSource(name=path.name, sha256=_file_sha256(path), open_file=_zip_opener(archive))


def _folder(path: Path) -> FeedSource:
    digest = hashlib.sha256()
    for file in sorted(path.glob("*.txt")):
        digest.update(file.name.encode() + b"\0")
        digest.update(file.read_bytes())

    def open_file(name: str) -> TextIO | None:
        file = path / name
        return file.open(encoding=ENCODING, newline="") if file.is_file() else None

    return FeedSource(name=path.name, sha256=digest.hexdigest(), open_file=open_file)


def _zip_opener(archive: zipfile.ZipFile) -> OpenFile:
    members = {Path(info.filename).name: info for info in archive.infolist() if not info.is_dir()}

    def open_file(name: str) -> TextIO | None:
        info = members.get(name)
        if info is None:
            return None
        return io.TextIOWrapper(archive.open(info), encoding=ENCODING, newline="")

    return open_file


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
