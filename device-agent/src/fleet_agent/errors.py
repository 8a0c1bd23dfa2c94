"""The agent's exception hierarchy; each error has a stable ``code`` and says what to fix."""

from __future__ import annotations

from typing import ClassVar


class AgentError(Exception):
    """Base of the agent's errors."""

    code: ClassVar[str] = "agent_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(AgentError):
    """The config file is missing, unreadable or wrong; the agent refuses to start."""

    code = "config_error"


class KeyFileError(AgentError):
    """The key file is missing, malformed or readable by others; the agent refuses to use it."""

    code = "key_file_error"


class OutboxError(AgentError):
    """The outbox cannot be opened or written."""

    code = "outbox_error"
