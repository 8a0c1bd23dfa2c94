"""fleet server side: ingest, storage, devices and keys, the local stack and the fleet CLI."""

__version__ = "0.1.0"
