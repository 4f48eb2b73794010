"""Judging results: trivial-fit floors, intervals, error metrics, verdicts, time to target, published numbers."""
