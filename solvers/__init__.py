"""Built-in solvers (installed as ``pinnbench.solvers``): one module per solver family."""
