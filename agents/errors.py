"""Typed errors. Each carries the exit code the CLI uses and a one-line message."""

from __future__ import annotations


class AgentdeckError(Exception):
    """Base class: a problem we can explain in one line."""

    exit_code: int = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(AgentdeckError):
    """The config file is unreadable, not TOML, or has an unknown key or a wrong type."""

    exit_code = 2


class StoreOpenError(AgentdeckError):
    """The database file cannot be used: unreadable, not a database, or from a newer schema."""

    exit_code = 2


class ModelError(AgentdeckError):
    """The model file is missing, unreadable or not a GGUF file."""

    exit_code = 2


class ProtocolError(AgentdeckError):
    """An event could not be decoded (unknown protocol version or kind)."""


class ReducerError(AgentdeckError):
    """A reducer refused a write; nothing was written."""


class PermissionDenied(ReducerError):
    """The actor may not make this change (ownership or channel role)."""


class NotFound(ReducerError):
    """The row the reducer was asked to change does not exist."""


class InvalidTransition(ReducerError):
    """The change is not allowed from the row's current state (e.g. done -> queued)."""


class InvalidArgument(ReducerError):
    """An argument is malformed (unknown agent, empty title, bad priority)."""


class DelegationTooDeep(InvalidArgument):
    """A subtask would sit deeper in its task tree than MAX_TASK_DEPTH allows."""


class TooManySubtasks(InvalidArgument):
    """A task already has MAX_SUBTASKS subtasks: an agent delegating in a loop stops here."""


class TaskTreeTooLarge(InvalidArgument):
    """A task tree has MAX_LIVE_SUBTASKS unfinished subtasks: runaway delegation stops here."""
