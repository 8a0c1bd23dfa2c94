"""``python -m fleet_agent`` runs the ``fleet-agent`` command."""

from fleet_agent.cli import main

main()
