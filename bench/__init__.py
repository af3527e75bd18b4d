"""Latency benchmarks: scripts that print tables and write JSON."""
