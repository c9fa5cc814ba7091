"""`[[hooks]]`: commands run on events, in the sandbox, the event as JSON on stdin. A
`tool.before` hook can deny a call; one that fails denies it too (fail closed)."""

from agents.hooks.dispatch import Hooks
from agents.hooks.events import run_event_hooks
from agents.hooks.run import HookEvent, HookOutcome, matching, run_hook

__all__ = ["HookEvent", "HookOutcome", "Hooks", "matching", "run_event_hooks", "run_hook"]
