"""Benchmarks and drills that run the real pipeline on loopback (issue 9 moves the others here)."""
