"""The cockpit's screens: the deck (agents, tasks, the log, the composer). Modals live
with their widgets (widgets/approval.py)."""
