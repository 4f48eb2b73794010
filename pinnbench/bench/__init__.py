"""Bench scripts: ``python -m pinnbench.bench {estimators,ops,roofline,solvers} [options]``.

They print measured time and peak memory tables; speed and memory targets live here (and in the
asv suite), never in timed unit tests.
"""

#: how every bench warms a solver up before it times or counts a step (the headers say it)
WARM = ("each solver's steady_state_steps warm-up steps (where its step's cost is stationary: "
        "sdze's low-rank momentum full)")
