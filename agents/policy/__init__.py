"""The permission gate's decisions: paths, shell commands, rules. No Textual, no I/O
besides resolving paths on the filesystem."""
