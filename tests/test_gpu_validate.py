"""scripts/gpu-validate, the parts that can be checked without a GPU: its install guard (the
blocker of the old gpu-check: from the repository root `import pinnbench` succeeds through the
current directory, so the install was skipped and the run died on pinnbench.problems), its clean
failure where no GPU is visible, and its summary table."""

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu-validate"


def _run(*args, **env):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


@pytest.fixture(scope="module")
def torch_without_pinnbench(tmp_path_factory):
    """A clean venv that can import torch (the test venv's site-packages on its path, whose .pth
    files, and so pinnbench's editable install, are not processed) but has no pinnbench: like the
    GPU machine's own Python."""
    root = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(root)
    py = root / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "test-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    check = subprocess.run([str(py), "-c", "import torch, pinnbench.cli"], cwd=REPO,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr  # the trap: importable from the repository root
    return py


def test_install_guard_sees_through_the_current_directory(torch_without_pinnbench):
    out = _run("--check-install", "--python", str(torch_without_pinnbench))
    assert out.returncode == 1 and "not installed" in out.stdout, out.stdout + out.stderr


def test_install_guard_accepts_this_checkouts_install():
    out = _run("--check-install", "--python", sys.executable)
    assert out.returncode == 0 and "installed: pinnbench from" in out.stdout, out.stdout + out.stderr


def test_without_a_gpu_it_stops_at_the_environment_stage_with_a_message(tmp_path):
    out = _run("--out", str(tmp_path), "--python", sys.executable)
    assert out.returncode == 1
    assert "no CUDA device visible to torch" in out.stderr
    assert not (tmp_path / "gpu.sqlite").exists()


def test_bad_options_exit_2():
    assert _run("--max-dim", "1e9").returncode == 2
    assert _run("--frobnicate").returncode == 2


def test_summary_table_shows_each_number_of_the_store(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from gpu_summary import summary
    finally:
        sys.path.pop(0)
    from pinnbench.schema import COLUMNS
    from pinnbench.store import Store

    row = {k: None for k in COLUMNS}
    row.update(run_id="r", cell_id="c", problem="poisson-2body-v1", dim=10**7, solver="sdze[...]",
               solver_name="sdze", status="ok", steps_done=20, time_per_step_s=0.125,
               setup_time_s=3.5, baseline_gpu_allocated_bytes=3 * 2**29,
               peak_gpu_allocated_bytes=2**32, peak_gpu_reserved_bytes=5 * 2**30,
               param_bytes=2**30, final_rel_l2=0.0123, floor_const_rel_l2=0.25, message="")
    st = Store(tmp_path / "s.sqlite")
    st.begin_run("r", "x", "2024-01-01T00:00:00+00:00", [], {})
    st.write_row(row)
    st.close()
    table = summary(str(tmp_path / "s.sqlite")).splitlines()
    assert table[-1] == ("| sdze | 1e+07 | ok | 20 | 0.125 | 3.5 | 1.500 | 4.000 | 5.000 | 1.000 "
                         "| 0.0123 | 0.25 |  |")


def test_every_file_the_script_leaves_fits_the_device_tools_limit_of_eight():
    """What lands in the output folder comes back from the GPU machine only up to 8 files: the
    names the script writes (report/ is tarred and removed) must stay within that, the
    roofline's table among them."""
    import re

    text = (REPO / "scripts" / "gpu-validate").read_text()
    names = set(re.findall(r'"\$OUT_DIR/([\w.-]+)"', text)) - {"report"}
    names |= {Path(s).name for s in re.findall(r'STORE="\$OUT_DIR/([\w.-]+)"', text)}
    assert "roofline.txt" in names and "report.tar.gz" in names
    assert len(names) <= 8, sorted(names)
