"""scripts/gpu-validate, the parts that can be checked without a GPU: its install guard (the
blocker of the old gpu-check: from the repository root `import pinnbench` succeeds through the
current directory, so the install was skipped and the run died on pinnbench.problems), its clean
failure where no GPU is visible, and its summary table."""

import os
import re
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
    from pinnbench.cells.schema import COLUMNS
    from pinnbench.cells.store import Store

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


def _gpu_summary():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gpu_summary
    finally:
        sys.path.pop(0)
    return gpu_summary


def _store_with(tmp_path, rows):
    from pinnbench.cells.schema import COLUMNS
    from pinnbench.cells.store import Store

    st = Store(tmp_path / "s.sqlite")
    st.begin_run("r", "x", "2024-01-01T00:00:00+00:00", [], {})
    for i, extra in enumerate(rows):
        row = {k: None for k in COLUMNS}
        row.update(run_id="r", cell_id=f"c{i}", problem="poisson-2body-v1", status="ok",
                   message="")
        row.update(extra)
        st.write_row(row)
    st.close()
    return str(tmp_path / "s.sqlite")


def test_floor_is_one_read_of_w0_at_the_copy_bandwidth():
    gs = _gpu_summary()
    # d = 1e7, width 128: W0 = 4 * 128 * 1e7 = 5.12 GB; at 4.8 TB/s one read takes 1.0667 ms
    assert gs.w0_bytes(10**7, 128) == 5_120_000_000
    assert gs.floor_s(10**7, 128, 4.8e12) == pytest.approx(5.12e9 / 4.8e12)


def test_floors_table_puts_each_step_beside_its_floor_and_counts(tmp_path):
    gs = _gpu_summary()
    from pinnbench.cells.store import load_results

    store = _store_with(tmp_path, [
        dict(dim=10**7, solver="sdze[...]", solver_name="sdze", width=128, time_per_step_s=0.2),
        dict(dim=10**3, solver="bp[...]", solver_name="bp", width=128, time_per_step_s=0.005),
        dict(dim=10**4, solver="bp[...]", solver_name="bp", width=128, time_per_step_s=None,
             status="oom")])
    counts = {("sdze[...]", 10**7): dict(ops=1500, matrix_products=115, host_syncs=2,
                                         mid_step_syncs=1, w0_sweeps=3.0, d_traffic_w0=17.25)}
    table = gs.floors_table(load_results(store), 2e12, counts).splitlines()
    assert table[0] == "- copy bandwidth (read + write): 2000.0 GB/s"
    rows = table[4:]
    assert len(rows) == 2  # the oom cell has no step to compare
    # bp at 1e3: W0 = 512 kB, floor 2.56e-7 s, 0.005 / 2.56e-7 = 19531.25; no counts taken
    assert rows[0] == "| bp | 1e+03 | 0.005 | 0.000512 | 2.56e-07 | 19531.2 | - | - | - | - | - |"
    # sdze at 1e7: 5.12 GB, floor 2.56 ms, 0.2 / 0.00256 = 78.125
    assert rows[1] == ("| sdze | 1e+07 | 0.2 | 5.12 | 0.00256 | 78.1 | 1500 | 115 | 2 (1) | "
                       "3.00 | 17.2 |")


def test_floors_measure_and_count_on_the_given_device(tmp_path):
    """The stage's whole path on the CPU: the copy bandwidth measured, one step counted per
    cell (the same counter as python -m pinnbench.bench ops)."""
    gs = _gpu_summary()
    from pinnbench.bench.ops import count_step

    spec = "bp[points=5,probes=3]"
    store = _store_with(tmp_path, [dict(dim=50, solver=spec, solver_name="bp", width=16,
                                        time_per_step_s=0.01)])
    row = gs.floors(store, "cpu").splitlines()[-1].split(" | ")
    c = count_step(spec, 50, width=16)
    assert row[6:9] == [str(c.ops), str(c.matrix_products),
                        f"{c.host_syncs} ({c.mid_step_syncs})"]
    assert float(row[4]) > 0 and float(row[5]) > 0


def test_the_floors_stage_appends_to_a_file_the_script_already_brings_back():
    text = (REPO / "scripts" / "gpu-validate").read_text()
    stage = text[text.index('stage "7. floors'):text.index('if [[ -d "$OUT_DIR/report" ]]')]
    assert "gpu_summary.py --floors" in stage and "clocks.sm" in stage
    assert "--query-compute-apps" in stage
    assert set(re.findall(r'"\$OUT_DIR/([\w.-]+)"', stage)) == {"roofline.txt"}


def test_the_sharded_stage_runs_a_two_rank_cell_and_tables_its_ranks(tmp_path):
    """scripts/gpu_sharded.py, the sharded stage, on gloo (CPU) with 2 ranks: an ok cell and
    one table line per rank; with fewer than 2 devices it says so and succeeds."""
    import subprocess

    script = str(REPO / "scripts" / "gpu_sharded.py")
    store = str(tmp_path / "s.sqlite")
    done = subprocess.run([sys.executable, script, store, "--device", "cpu", "--ranks", "2",
                           "--dims", "64", "--steps", "3"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "2 ranks (cpu): ok" in lines[0]
    assert [ln.split("|")[1].strip() for ln in lines if ln.startswith("| ") and "rank" not in ln] \
        == ["0", "1"]
    one = subprocess.run([sys.executable, script, store, "--device", "cpu"],
                         capture_output=True, text=True, timeout=60)
    assert one.returncode == 0 and "nothing to shard" in one.stdout


def test_the_graphs_stage_script_runs_and_compares(tmp_path):
    """scripts/gpu_graphs.py (stage 8) on the CPU, where cuda_graph is ignored: both variants are
    the same eager step, so their losses agree exactly."""
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_graphs.py"), "--device",
                          "cpu", "--dims", "30", "--steps", "8", "--estimators", "stde",
                          "--sdze", "sdze[momentum=0.5]", "--zo", "zo[q=2]"],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    sdze, zo, bp = (line.split() for line in out.stdout.splitlines()[-3:])
    assert bp[:2] == ["30", "stde"] and float(bp[-1]) == 0.0, out.stdout
    assert sdze[:2] == ["30", "sdze[momentum=0.5]"] and float(sdze[-1]) == 0.0, out.stdout
    assert zo[:2] == ["30", "zo[q=2]"] and float(zo[-1]) == 0.0, out.stdout
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_graphs.py"), "--steps",
                          "3"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_budget_must_be_whole_seconds():
    for bad in ("ten", "-5", "1.5"):
        out = _run("--budget", bad)
        assert out.returncode == 2 and "--budget must be a whole number" in out.stderr, bad


def test_every_timed_stage_is_cut_to_the_budget():
    """Under --budget each stage's timeout comes from `limit`, so no stage can run the lease's
    one command past its end: a stage with a fixed `timeout N` would escape it."""
    text = (REPO / "scripts" / "gpu-validate").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    stages = [line for line in lines if re.search(r"(?<!-)\btimeout ", line)]
    fixed = [line for line in stages if re.search(r"(?<!-)\btimeout \d", line)]
    assert stages and not fixed, fixed


def test_data_blocks_script_times_both_block_rules_and_compares_the_sources(capsys, monkeypatch):
    """scripts/gpu_data_blocks.py on the CPU, the device's rule applied there (column_blocks
    asked as for "cuda"): a row with both times and a source difference at rounding (the same
    numbers summed in other blocks), the CPU's many blocks then at most DEVICE_BLOCKS, and the
    module's count restored after."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gpu_data_blocks
    finally:
        sys.path.pop(0)
    from pinnbench.problems import _chunked

    monkeypatch.setattr(_chunked, "BLOCK_ELEMENTS", 116 * 5)
    real = _chunked.column_blocks
    counts = []

    def spy(n_rows, n_cols, device=None):
        blocks = list(real(n_rows, n_cols, "cuda"))  # the device's rule, on the CPU
        counts.append((_chunked.DEVICE_BLOCKS, len(blocks)))
        return iter(blocks)

    monkeypatch.setattr(_chunked, "column_blocks", spy)
    assert gpu_data_blocks.main(["--device", "cpu", "--dims", "1000", "--reps", "1",
                                 "--compiled"]) == 0
    row = capsys.readouterr().out.splitlines()[-1].split()
    assert row[0] == "1000" and float(row[1]) > 0 and float(row[2]) > 0
    assert len(row) == 8 and float(row[7]) > 0, row  # the compiled column
    assert os.environ.get("PINNBENCH_COMPILE") != "1"  # restored
    assert float(row[4]) < 1e-5, row
    cpu = [n for rule, n in counts if rule != 16]
    gpu = [n for rule, n in counts if rule == 16]
    assert min(cpu) > 16 and gpu and max(gpu) <= 16, counts
    assert _chunked.DEVICE_BLOCKS == 16
