"""Helpers to run real Isthmus components in tests and benchmarks."""
