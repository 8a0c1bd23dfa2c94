"""GTFS import: a feed's CSV files read, checked and normalized into ``fleet_schemas.gtfs.Feed``."""

from fleet_processing.gtfs.reader import FeedReading, FileCount, read_feed

__all__ = ["FeedReading", "FileCount", "read_feed"]
