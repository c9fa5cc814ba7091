"""Telling the person: notifications of approvals, failed tasks and open breakers, by
webhook, desktop and (the cockpit's) terminal, each delivery recorded.

The parts are imported from their modules (agents.notify.notifier for the host's
Notifier, .summary for the CLI's line, .text for the cockpit's alert), so the CLI does
not load the HTTP client to print a line."""
