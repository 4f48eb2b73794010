"""Property: whatever options and values `pinnbench run --dry-run` is given, it exits 0 (the
plan) or 2 (one line on stderr); what it refuses is refused the same without --dry-run (so no
cell runs); and the store's bytes and its folder stay as they were."""

import contextlib
import functools
import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from pinnbench.commands import plan as plan_mod
from pinnbench.cli import main
from pinnbench.cells.store import Store

FAKES = str(Path(__file__).with_name("fake_solvers.py"))
BASE = ["run", "--problems", "fake-affine-v1", "--solvers", "fake-ok", "--dims", "3",
        "--steps", "3", "--width", "8", "--depth", "1", "--import", FAKES, "--no-report",
        "--quiet"]

NUMERIC = ["--dims", "--steps", "--seeds", "--timeout", "--time-budget", "--width", "--depth",
           "--points", "--warmup", "--memory-limit", "--threads", "--jobs"]
#: digits of other scripts (full-width, Arabic-Indic, Devanagari, superscript), the marks of
#: numbers and ranges, and letters
ALPHABET = "0123456789" + "\uff10\uff11\uff18\u0663\u0967\u00b2" + "eE.+-_,:x " + "kMGinfa["

values = st.one_of(
    st.integers(min_value=-10, max_value=10**25).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=ALPHABET, max_size=12),
    st.sampled_from(["1e99", "\uff18", "1_000", "0..3", "3", "3,4", "3..30:x2", "1e3..1e5:x2",
                     "4294967296", "99999999999999999999", "64M", "1P", "0", "-1", ""]))
options = st.lists(st.tuples(st.sampled_from(NUMERIC), values), max_size=4)
solver_values = st.one_of(st.text(alphabet=ALPHABET, max_size=8), values)


def _main(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


def _fake_calibration(spec, dim):
    return 0.01 + 1e-6 * dim, 0.001 + 1e-7 * dim


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(opts=options, lr=st.one_of(st.none(), solver_values))
def test_any_option_values_exit_0_or_2_and_leave_the_store_alone(opts, lr):
    # the calibration runs in this process on a fixed model of time (the property is about
    # exit codes and the store, not estimates; tests/test_cli_plan.py runs the real one)
    original = plan_mod.calibrate
    plan_mod.calibrate = functools.partial(original, measure=_fake_calibration)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            store = Path(tmp) / "s.sqlite"
            s = Store(store)
            s.begin_run("r0", "pinnbench run", "2024-01-01T00:00:00+00:00", [], {})
            s.close()
            before = store.read_bytes()
            argv = list(BASE)
            for flag, value in opts:
                argv += [flag, value]
            if lr is not None:
                argv += ["--solvers", f"fake-ok[lr={lr}]"]
            for target in (store, Path(tmp) / "new.sqlite"):
                code, err = _main(argv + ["--store", str(target), "--dry-run"])
                assert code in (0, 2), (argv, code, err)
                if code == 2:  # refused: also without --dry-run, before anything runs
                    assert err.startswith("error: ") and err.count("\n") == 1, (argv, err)
                    assert (code, err) == _main(argv + ["--store", str(target)]), argv
            assert store.read_bytes() == before, argv
            assert sorted(p.name for p in Path(tmp).iterdir()) == ["s.sqlite"], argv
    finally:
        plan_mod.calibrate = original
