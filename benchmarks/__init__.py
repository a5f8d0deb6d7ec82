"""Benchmarks for gsa: ``python -m benchmarks`` (see README.md here)."""
