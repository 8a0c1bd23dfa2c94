"""Files of the repository that the server reads: migrations and the broker's config.

They live at the repository root (``sql/``, ``deploy/``) because operators
read and deploy them directly; this package runs from a checkout.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
SQL_DIR = REPO_ROOT / "sql"
MOSQUITTO_DIR = REPO_ROOT / "deploy" / "mosquitto"
