"""``python -m fleet_ingest`` runs the ``fleet`` command."""

from fleet_ingest.cli import main

main()
