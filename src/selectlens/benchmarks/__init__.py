"""Benchmarks: SelectLens against reference implementations of the original pipeline, in one run."""
