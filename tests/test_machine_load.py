"""Load average, physical cores, default threads and the unsteady-timing check."""

from pinnbench.cells import machine_load as ml


def test_default_threads_split_the_free_physical_cores(monkeypatch):
    monkeypatch.setattr(ml, "physical_cores", lambda: 8)
    assert ml.default_threads(1, load=0.0) == 8 and ml.default_threads(2, load=0.3) == 4
    assert ml.default_threads(16, load=0.0) == 1
    # other work keeps cores busy: fewer threads, never fewer than one
    assert ml.default_threads(1, load=3.0) == 5 and ml.default_threads(2, load=3.0) == 2
    assert ml.default_threads(1, load=7.6) == 1 and ml.default_threads(1, load=40.0) == 1
    monkeypatch.setattr(ml, "load_average", lambda: None)  # no load average: all cores
    assert ml.default_threads(1) == 8


def test_overload_warning_only_above_the_cores():
    assert ml.overload_warning(load=1.5, cores=2) is None
    assert "load average 5 > 2 cores" in ml.overload_warning(load=5.0, cores=2)


def curve(rates):
    """A curve logged at 0, 1, 2, 4, 8, ... whose stretches took ``rates`` s per step."""
    pts, t, step = [{"step": 0, "time_s": 0.0}, {"step": 1, "time_s": 1.0},
                    {"step": 2, "time_s": 2.0}], 2.0, 2
    for r in rates:
        nxt = step * 2
        t += r * (nxt - step)
        pts.append({"step": nxt, "time_s": t})
        step = nxt
    return {"curve": pts}


def test_step_time_spread_over_stretches_after_warmup():
    # stretches 2->4, 4->8, 8->16 are shorter than MIN_STRETCH_STEPS = 16 steps: not counted;
    # 16->32, 32->64, 64->128 are
    assert ml.MIN_STRETCH_STEPS == 16
    assert abs(ml.step_time_spread(curve([9.0, 9.0, 9.0, 0.1, 0.1, 0.1])) - 1.0) < 1e-9
    assert abs(ml.step_time_spread(curve([0.1, 0.1, 0.1, 0.1, 0.1, 0.35])) - 3.5) < 1e-9
    assert ml.step_time_spread(curve([0.1, 0.1, 0.1, 0.1])) is None  # one stretch
    assert ml.unsteady_timing_warning(curve([0.1, 0.1, 0.1, 0.1, 0.1, 0.15]), "c") is None
    assert "varied 3.5x" in ml.unsteady_timing_warning(curve([0.1] * 5 + [0.35]), "c")
