"""Named option sets of ``pinnbench run --preset NAME``: a command that reproduces a committed
page, written once. Options given on the command line win over the preset's."""

from __future__ import annotations

#: name -> `pinnbench run` options
PRESETS: dict[str, tuple[str, ...]] = {
    # the flags of reports/cpu-1e3-1e7 (its README): time and memory at d = 1e3 .. 1e7, not
    # training (10 steps); 20G caps bp, which does not fit at 1e7, so it is stored `oom`
    "scale": ("--problems", "poisson-2body-scaled-v1", "--solvers", "sdze,sdze[stream=true],bp",
              "--dims", "1e3..1e7", "--steps", "10", "--threads", "1", "--memory-limit", "20G",
              "--timeout", "3000"),
}
