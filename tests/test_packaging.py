"""A built wheel carries the problems: install it into a bare folder and list them from outside
the repository (asv builds wheels, so the package-dir mapping of problems/ must survive)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path


from pinnbench import list_problems
from pinnbench.maths.problem_registry import problem_class

REPO = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                ".pytest_cache", ".asv", "results", "test-artifacts")


def test_wheel_installs_and_lists_every_problem(tmp_path):
    # build from a copy, so that the shared checkout gets no build/ or egg-info side effects
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=IGNORE)
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # no build isolation: the venv's setuptools builds it, no network needed
    subprocess.run(pip + ["wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(wheels)],
                   check=True, cwd=src, timeout=300)
    (wheel,) = wheels.glob("pinnbench-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert {"pinnbench/problems/ball.py", "pinnbench/problems/biharmonic.py",
            "pinnbench/problems/time_dependent.py", "pinnbench/problems/_many_body.py"} <= names
    subprocess.run(pip + ["install", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = ("import json, pinnbench, pinnbench.problems as pp; print(json.dumps("
            "[pinnbench.__file__, pp.__file__, pinnbench.list_problems()]))")
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=120).stdout
    pkg_file, problems_file, listed = json.loads(out.strip().splitlines()[-1])
    assert pkg_file.startswith(str(target)) and problems_file.startswith(str(target))
    builtin = {n for n in list_problems()
               if problem_class(n).__module__.startswith("pinnbench.problems.")}
    assert builtin <= set(listed)
    assert {"poisson-2body-v1", "biharmonic-3body-v1", "heat-v1", "wave-v1"} <= set(listed)
