"""The ``fleet`` command: thin click commands over the server packages.

Production commands live here; development tools (``fleet_devtools``) add
theirs through the ``fleet.commands`` entry point group when installed.
"""

__version__ = "0.1.0"
