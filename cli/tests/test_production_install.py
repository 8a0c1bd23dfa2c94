"""A production install of ``fleet`` pulls in no agent and no development tools.

Checked on the installed distributions' metadata, the same requirements pip
follows for ``pip install ./schemas ./processing ./store ./ingest ./serve ./cli``.
"""

from __future__ import annotations

from importlib.metadata import distribution, entry_points

from packaging.requirements import Requirement


def _fleet_closure(name: str) -> set[str]:
    """The fleet distributions ``name`` requires, directly or through others."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for line in distribution(current).requires or []:
            requirement = Requirement(line)
            if requirement.name.startswith("fleet-") and requirement.marker is None:
                todo.append(requirement.name)
    return seen


def test_the_fleet_command_requires_neither_the_agent_nor_devtools() -> None:
    assert _fleet_closure("fleet-cli") == {
        "fleet-cli",
        "fleet-ingest",
        "fleet-serve",
        "fleet-store",
        "fleet-processing",
        "fleet-schemas",
    }


def test_development_commands_come_only_from_devtools() -> None:
    points = entry_points(group="fleet.commands")
    assert {p.name for p in points} == {"stack", "simulate", "demo", "demo-feed", "bench", "dashboards"}
    assert {p.dist.name for p in points if p.dist is not None} == {"fleet-devtools"}
