"""Built-in problems (installed as ``pinnbench.problems``): one module per PDE family.

Each module calls :func:`pinnbench.problem_registry.register_problem` for the versioned ids it
provides; the registry imports every module here on first lookup.
"""
