"""Benchmarks: run on demand (`python -m benchmarks.NAME`), print figures, assert nothing."""
