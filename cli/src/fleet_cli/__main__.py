"""``python -m fleet_cli`` runs the ``fleet`` command."""

from fleet_cli.cli import main

main()
