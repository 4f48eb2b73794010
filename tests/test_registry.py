"""make_problem / list_problems: lookups, argument validation, third-party entry points."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from pinnbench import list_problems, make_problem, register_problem
from pinnbench.maths.problem_registry import PROBLEMS


def test_unknown_id_suggests_close_names():
    with pytest.raises(ValueError, match=r"did you mean 'poisson-2body-v1'"):
        make_problem("poisson-2bdy-v1", dim=4)


@pytest.mark.parametrize("pid, too_small, needed", [
    ("poisson-2body-v1", 1, 2), ("sine-gordon-2body-scaled-v1", 1, 2),
    ("allen-cahn-3body-v1", 2, 3), ("biharmonic-3body-v1", 2, 3), ("heat-v1", 0, 1)])
def test_dim_below_minimum(pid, too_small, needed):
    with pytest.raises(ValueError, match=f"needs dim >= {needed}"):
        make_problem(pid, dim=too_small)
    assert make_problem(pid, dim=needed).dim == needed


@pytest.mark.parametrize("dim", [2.5, "10", True, 0, -3, None])
def test_bad_dim(dim):
    with pytest.raises(ValueError, match="dim"):
        make_problem("poisson-2body-v1", dim=dim)


@pytest.mark.parametrize("dtype", ["float16", torch.float16, "double", 32])
def test_bad_dtype_names_allowed(dtype):
    with pytest.raises(ValueError, match="allowed: float32, float64"):
        make_problem("poisson-2body-v1", dim=4, dtype=dtype)


def test_dtype_by_name_and_by_torch_dtype():
    assert make_problem("heat-v1", dim=3, dtype="float64").dtype == torch.float64
    assert make_problem("heat-v1", dim=3, dtype=torch.float64).exact(
        torch.zeros(2, 4, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x"])
def test_unknown_device_names_allowed(device):
    with pytest.raises(ValueError, match="allowed: auto, cpu, cuda"):
        make_problem("poisson-2body-v1", dim=4, device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda():
    with pytest.raises(ValueError, match="CUDA is not available"):
        make_problem("poisson-2body-v1", dim=4, device="cuda")
    assert make_problem("poisson-2body-v1", dim=4, device="auto").device.type == "cpu"


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        make_problem("poisson-2body-v1", dim=4, seed=seed)


def test_bad_ids_and_duplicates_refused():
    with pytest.raises(ValueError, match="name-v1"):
        register_problem("Poisson2Body", object)
    with pytest.raises(ValueError, match="already registered"):
        register_problem("poisson-2body-v1", "pinnbench.problems.ball:PoissonTwoBody")


def test_same_arguments_make_the_same_problem():
    p = make_problem("allen-cahn-3body-scaled-v1", dim=6, seed=2, dtype="float64")
    assert (p.id, p.dim, p.seed, p.dtype, str(p.device), p.options) == (
        "allen-cahn-3body-scaled-v1", 6, 2, torch.float64, "cpu", {"radius": "sqrt-dim"})
    q = make_problem(p.id, dim=p.dim, seed=p.seed, dtype="float64", device=p.device)
    assert torch.equal(p.coefficients, q.coefficients) and p.radius == q.radius


THIRD_PARTY = '''
import torch
from pinnbench.maths.problem import LinearTerm, Operator, Problem


class Quadratic(Problem):
    """u = ||x||^2, Lap u = 2d on the unit cube."""
    family = "thirdparty-quadratic"
    operator = Operator((LinearTerm("laplacian"),))

    def exact(self, x):
        return (x * x).sum(dim=1)

    def source(self, x):
        return torch.full((x.shape[0],), 2.0 * self.dim, dtype=x.dtype)
'''


def test_entry_point_group_registers_third_party_problem(tmp_path, monkeypatch):
    """A package that declares ``[project.entry-points."pinnbench.problems"]`` shows up in
    list_problems() and builds through make_problem (a real dist-info found on sys.path)."""
    (tmp_path / "pinnbench_thirdparty_demo.py").write_text(THIRD_PARTY)
    info = tmp_path / "pinnbench_thirdparty_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pinnbench-thirdparty-demo\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [pinnbench.problems]
        thirdparty-quadratic-v1 = pinnbench_thirdparty_demo:Quadratic
        """))
    list_problems()  # built-ins loaded; then forget the entry points read so far
    monkeypatch.setattr(PROBLEMS, "_entries", dict(PROBLEMS._entries))
    monkeypatch.setattr(PROBLEMS, "_loaded", False)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "pinnbench_thirdparty_demo", raising=False)

    names = list_problems()
    assert "thirdparty-quadratic-v1" in names and "poisson-2body-v1" in names
    p = make_problem("thirdparty-quadratic-v1", dim=3, dtype="float64")
    assert type(p).__name__ == "Quadratic" and p.id == "thirdparty-quadratic-v1"
    assert p.source(torch.zeros(2, 3, dtype=torch.float64)).tolist() == [6.0, 6.0]
    sys.modules.pop("pinnbench_thirdparty_demo", None)


def test_entry_point_to_a_non_problem_is_refused(monkeypatch):
    monkeypatch.setattr(PROBLEMS, "_entries", {**PROBLEMS._entries, "notaproblem-v1": "math:sqrt"})
    with pytest.raises(TypeError, match="not a Problem subclass"):
        make_problem("notaproblem-v1", dim=3)
