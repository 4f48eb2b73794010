"""Built-in problems (installed as ``pinnbench.problems``): one module per PDE family.

Each module calls :func:`pinnbench.problem_registry.register_problem` for the versioned ids it
provides; the registry imports every module here whose name does not start with ``_`` on first
lookup (``_chunked`` and ``_many_body`` are shared helpers, not problem families).

- ``ball``: Poisson, Allen-Cahn, Sine-Gordon with the two-body and three-body solutions on the
  unit ball (``*-v1``) or the ball of radius sqrt(d) (``*-scaled-v1``, option ``radius``);
  two-body ids support gPINN (``source_grad``).
- ``biharmonic``: ``biharmonic-3body-v1``, Lap^2 u = f on the annulus 1 < ||x|| < 2.
- ``time_dependent``: ``heat-v1`` (PINNacle) and ``wave-v1``, points (n, d + 1), time last.

Every source term is a closed form checked against autograd in tests/test_problems.py.
"""
