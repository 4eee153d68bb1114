"""Test support: real servers on free ports, SSE readers, subprocess control."""
