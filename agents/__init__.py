"""agentdeck's runtime: everything both front ends need, no textual."""

# First, before anything imports numpy: llama.cpp's libraries (see native_libs).
from agents import native_libs as native_libs
