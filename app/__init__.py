"""agentdeck's front ends: the cockpit, the CLI, the benches."""

# agents first: llama.cpp's libraries load before numpy's (agents.native_libs).
import agents as agents
