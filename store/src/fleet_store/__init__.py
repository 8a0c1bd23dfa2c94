"""Where server state lives and how it is laid out: settings, migrations, registry, keys, Redis layout.

Shared by every server process (ingest, and later serve); it imports only
fleet_schemas among fleet's packages, so neither service depends on the other.
"""
