"""Bench scripts: ``python -m pinnbench.bench {estimators,ops,roofline,solvers} [options]``.

They print measured time and peak memory tables; speed and memory targets live here (and in the
asv suite), never in timed unit tests.
"""
