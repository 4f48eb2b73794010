"""Built-in problems (installed as ``pinnbench.problems``): one module per PDE family.

Each module calls :func:`pinnbench.maths.problem_registry.register_problem` for the versioned ids it
provides; the registry imports every module here whose name does not start with ``_`` on first
lookup (``_chunked`` and ``_many_body`` are shared helpers, not problem families).

- ``ball``: Poisson, Allen-Cahn, Sine-Gordon with the two-body and three-body solutions on the
  unit ball (``*-v1``) or the ball of radius sqrt(d) (``*-scaled-v1``, option ``radius``);
  every one supports gPINN (``source_grad``).
- ``biharmonic``: Lap^2 u = f on the annulus 1 < ||x|| < 2: ``biharmonic-3body-v1`` (the
  published setup, u = 0 only: ill-posed, ``well_posed = False``, kept to reproduce it) and the
  clamped, well-posed ``biharmonic-clamped-3body-v1``, ``biharmonic-clamped-2body-v1`` and
  ``biharmonic-clamped-2body-scaled-v1`` (annulus sqrt(d) < ||x|| < 2 sqrt(d)).
- ``time_dependent``: ``heat-v1`` (PINNacle) and ``wave-v1``, points (n, d + 1), time last.
- ``terminal``: ``hjb-lin-v1`` and ``bsb-v1`` (Black-Scholes-Barenblatt), the SDGD/STDE
  terminal-value problems, with terminal and lateral conditions imposed (well-posed).

Every source term is a closed form checked against autograd in tests/test_problems.py.
"""
