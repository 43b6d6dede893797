"""Benchmarks and experiments (run as modules: ``python -m benchmarks.NAME``)."""
