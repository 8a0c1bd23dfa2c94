"""The ingest service alone: broker → checks → TimescaleDB + Redis → ack, at least once."""
