"""The roofline bench: its bound formulas against hand-computed numbers, its machine measurements,
and its table for a tiny d."""

import math
import time
import re

import pytest

from pinnbench.bench import roofline
from pinnbench.bench.roofline import StepCost, copy_rate, gemm_rate, step_cost

# a small case: d = 10, h = 4, one hidden (h x h) layer (depth 2), n = 3 points, V = 2 probes
#   F1 = 2 (n + V) d h         = 2 * 5 * 10 * 4       = 400
#   H  = 2 (L - 1) n (1 + 2V) h^2 = 2 * 1 * 3 * 5 * 16 = 480
#   D  = 4 (n + V) d bytes     = 4 * 5 * 10           = 200
#   W  = 4 d h bytes           = 4 * 10 * 4           = 160
SMALL = dict(dim=10, width=4, depth=2)
#: every parameter the formulas read is given, so that a change of a solver's defaults does not
#: change these cases
SHAPE = "points=3,probes=2"


def test_first_layer_hidden_and_data_terms():
    assert roofline.first_layer_flops(3, 2, 10, 4) == 400
    assert roofline.hidden_flops(3, 2, 4, 2) == 480
    assert roofline.data_bytes(3, 2, 10) == 200


@pytest.mark.parametrize("spec, flops, nbytes", [
    # forward F1 + weight gradient F1 + forward H + backward 2H; D + 9W
    (f"bp[{SHAPE},estimator=stde]", 2 * 400 + 3 * 480, 200 + 9 * 160),
    # r = 1, q = 2: shared F1 + 2(n+V)dr = 400 + 100; 2q evaluations of 2(n+V)r(r+h) + H = 50 + 480;
    # update 2dhr = 80; D + 3W
    (f"sdze[{SHAPE},q=2,rank=1,crns=true]", 500 + 4 * 530 + 80, 200 + 3 * 160),
    # without CRNS each of the 2q = 4 evaluations draws its data and pays the shared products
    (f"sdze[{SHAPE},q=2,rank=1,crns=false]", 4 * 500 + 4 * 530 + 80, 4 * 200 + 3 * 160),
    # q = 1, crns=false: 2 evaluations of F1 + H; 2 draws of D + 10 W
    (f"zo[{SHAPE},q=1,crns=false,momentum=0]", 2 * (400 + 480), 2 * 200 + 10 * 160),
    # one draw with CRNS; dense momentum reads and writes m: + 2W
    (f"zo[{SHAPE},q=1,crns=true,momentum=0.5]", 2 * (400 + 480), 200 + 10 * 160 + 2 * 160),
])
def test_step_cost_by_hand(spec, flops, nbytes):
    cost = step_cost(spec, **SMALL)
    assert cost.flops == flops
    assert cost.bytes == nbytes


def test_step_cost_at_the_issue_shape():
    """d = 1e5, width 128, depth 3, 100 points, 16 probes: the first-layer product of the issue
    (116 rows through a 1e5 x 128 layer) is 2.9696 GFLOP; bp does it twice, plus three passes of
    the two hidden layers over 100 * 33 jet rows."""
    f1 = 2 * 116 * 10**5 * 128
    hidden = 2 * 2 * 100 * 33 * 128**2
    assert step_cost("bp[estimator=stde]", 10**5).flops == 2 * f1 + 3 * hidden
    assert step_cost("bp[estimator=stde]", 10**5).bytes == 4 * 116 * 10**5 + 9 * 4 * 10**5 * 128


def test_the_roofline_asks_the_solver_for_its_cost_model(monkeypatch):
    """The roofline names no solver: a third-party solver gets a bound by declaring
    Solver.step_cost, and one that declares none is refused with that reason."""
    import fake_solvers

    with pytest.raises(ValueError, match="fake-ok.*declares no Solver.step_cost"):
        step_cost("fake-ok", 100)
    monkeypatch.setattr(fake_solvers.FakeOk, "step_cost",
                        lambda self, dim, width, depth: StepCost(flops=dim * width * depth,
                                                                 bytes=7.0), raising=False)
    assert step_cost("fake-ok", 100, width=4, depth=2) == StepCost(flops=800, bytes=7.0)


def test_bound_is_the_slower_of_compute_and_memory():
    assert StepCost(flops=100, bytes=50).bound_s(10.0, 10.0) == (10.0, "flops")
    assert StepCost(flops=100, bytes=500).bound_s(10.0, 10.0) == (50.0, "bytes")


@pytest.mark.parametrize("spec", ["bp[estimator=hte]", "sdze[subspace=false]",
                                  "sdze[estimator=fd]", "bp[dist=coordinate]"])
def test_unmodelled_configurations_are_refused(spec):
    with pytest.raises(ValueError, match="roofline models"):
        step_cost(spec, 100)


@pytest.mark.parametrize("spec, draws", [("bp", 1), ("sdze[q=2,crns=true]", 1),
                                          ("zo[q=3,crns=false]", 6)])
def test_data_column_is_the_solvers_own_draw_time_within_its_steps(monkeypatch, spec, draws):
    """The worker's ``data_s`` is the time the timed steps spent in Solver.draw (every draw of
    the step: 2q without common random numbers): a draw made 20 ms slower shows up as
    draws x 20 ms, and inside the step time."""
    import pinnbench.maths.step_data as step_data

    real = step_data.draw_step_data

    def slow(*args, **kwargs):
        time.sleep(0.02)
        return real(*args, **kwargs)

    monkeypatch.setattr(step_data, "draw_step_data", slow)
    res = roofline._step_worker(dict(solver=spec, dim=20, width=8, depth=2,
                                     problem="poisson-2body-v1", steps=2, threads=1))
    assert res["status"] == "ok"
    assert 0.02 * draws <= res["data_s"] < 0.02 * draws + 0.5
    assert res["time_s"] >= res["data_s"]


def test_machine_measurements_are_positive_and_finite():
    rate, seconds = gemm_rate(16, 256, 32, repeats=3)
    assert math.isfinite(rate) and rate > 0 and seconds > 0
    assert rate * seconds == pytest.approx(2 * 16 * 256 * 32)
    bw = copy_rate(2**18, repeats=3)
    assert math.isfinite(bw) and bw > 0


@pytest.mark.parametrize("argv, says", [
    (["--dims", "0"], "--dims"),
    (["--dims", "1e3..x"], "--dims"),
    (["--solvers", "sdz"], "did you mean 'sdze'"),
    (["--solvers", "bp[estimator=sdgd]"], "roofline models"),
    (["--steps", "0"], "--steps"),
    (["--bogus"], "unrecognized"),
])
def test_bad_arguments_one_line_exit_2(argv, says, capsys):
    assert roofline.main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


_ROW = re.compile(r"^\s*100\s+(\S+)" + r"\s+([\d.e+-]+)" * 7 + r"\s+(flops|bytes)\s*$")


def test_table_for_a_tiny_d(capsys):
    """--dims 100 --steps 1: one row per solver; each bound is max(FLOPs / R, bytes / B) with the
    rates the run printed, and the ratios are the printed times over it and over G."""
    assert roofline.main(["--dims", "100", "--steps", "1", "--repeats", "3"]) == 0
    out = capsys.readouterr().out
    line = re.search(r"# d = 100: GEMM ([\d.]+) GFLOP/s at the first layer 116 x 100 x 128 "
                     r"\(G = ([\d.e+-]+) s\), ([\d.]+) GFLOP/s at the hidden layers "
                     r"3300 x 128 x 128; copy bandwidth ([\d.]+) GB/s", out)
    first, g_s, hidden, bw = (float(x) for x in line.groups())
    rate, bw = max(first, hidden) * 1e9, bw * 1e9
    assert g_s > 0 and math.isfinite(rate) and rate > 0 and math.isfinite(bw) and bw > 0
    rows = {m.group(1): m for m in map(_ROW.match, out.splitlines()) if m}
    assert sorted(rows) == ["bp", "sdze", "zo"]
    for name, m in rows.items():
        measured, bound, ratio, data, data_ratio, step_g, data_g = (float(m.group(i))
                                                                    for i in range(2, 9))
        expected, by = step_cost(name, 100).bound_s(rate, bw)
        assert m.group(9) == by
        assert bound == pytest.approx(expected, rel=0.02, abs=1e-4)
        assert measured > 0 and data > 0
        assert ratio == pytest.approx(measured / bound, rel=0.05, abs=0.1)
        assert data_ratio == pytest.approx(data / bound, rel=0.05, abs=0.1)
        assert step_g == pytest.approx(measured / g_s, rel=0.05, abs=0.1)
        assert data_g == pytest.approx(data / g_s, rel=0.05, abs=0.1)
