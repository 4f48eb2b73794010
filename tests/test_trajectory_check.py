"""scripts/trajectory_check.py: the trajectories it records are those of cells of ``--steps``
steps (each solver gets the steps as its budget)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "trajectory_check.py"


def _script():
    spec = importlib.util.spec_from_file_location("trajectory_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("one_thread")
def test_a_step_size_decayed_over_the_budget_decays_over_the_steps_run():
    """zo decays its step size over the cell's budget by default: the check's run of N steps
    is the run with the decay written out as N steps (it ran at a constant step size)."""
    run = _script().run
    small = "q=1,points=8,probes=4"
    budget = run(f"zo[{small},decay_steps=budget]", "poisson-2body-v1", 10, 4, 0)
    written = run(f"zo[{small},decay_steps=4]", "poisson-2body-v1", 10, 4, 0)
    constant = run(f"zo[{small},decay_steps=0]", "poisson-2body-v1", 10, 4, 0)
    assert budget == written
    assert budget["losses"][-1] != constant["losses"][-1]
