"""Run a pinnbench sweep on Slurm GPU nodes: dask-jobqueue's SLURMCluster + `pinnbench run`.

Each Slurm job is one Dask worker with one thread (one cell at a time), one GPU, and the resource
``GPU=1``, which every CUDA cell asks for. The scheduler lives in this script's process; the sweep
is the ordinary `pinnbench run --executor dask --scheduler ADDRESS`, so this process also plans
the sweep and is the only writer of the SQLite store (keep the store on a local or reliable
disk). Cells still run in their own process on the worker node, with the same timeout and
measurements as on a workstation.

Needs: ``pip install 'pinnbench[dask]' dask-jobqueue`` in an environment that the compute nodes
can see (a shared file system), and plugin files (--import x.py) on that shared file system too.

Run it from a node that has CUDA (e.g. inside ``salloc --gres=gpu:1 ...``): `pinnbench run`
checks ``--device cuda`` on the planning machine. Edit the settings below, then:

    python docs/slurm_example.py

Extra command-line arguments go to `pinnbench run`. Interrupted (Ctrl-C, or the planning job
ends): the finished cells are in the store; ``python docs/slurm_example.py --resume`` runs only
what is missing.
"""

import sys

# -- settings: edit for your site --------------------------------------------------------------------
SLURM = dict(
    queue="gpu",                       # partition (#SBATCH -p)
    account="my-project",              # #SBATCH -A
    walltime="04:00:00",               # per worker job
    cores=1, processes=1,              # one worker process with one thread: one cell at a time
    job_cpu=8,                         # CPUs booked per job (the cell process uses them)
    memory="64GB",                     # per job (#SBATCH --mem) and the worker's memory limit
    job_extra_directives=["--gres=gpu:1"],
    worker_extra_args=["--resources", "GPU=1"],  # what CUDA cells ask for
    job_script_prologue=["source /path/to/pinnbench/.venv/bin/activate"],
    local_directory="$TMPDIR",
    log_directory="dask-logs",
)
N_GPU_JOBS = 4                         # workers (= GPUs = cells in flight)
RUN_ARGS = [
    "--problems", "poisson-2body-v1", "--solvers", "sdze,bp", "--dims", "1e3..1e6",
    "--seeds", "0..2", "--steps", "1000", "--device", "cuda", "--timeout", "3600",
    "--store", "results/slurm.sqlite",
    "--no-worker-timeout", "3600",     # how long to wait for queued jobs before giving up
]


def main() -> int:
    from dask_jobqueue import SLURMCluster

    from pinnbench.cli import main as pinnbench_main

    cluster = SLURMCluster(**SLURM)
    print(cluster.job_script(), file=sys.stderr)  # what each worker job runs
    cluster.scale(jobs=N_GPU_JOBS)
    try:
        return pinnbench_main(["run", "--executor", "dask", "--scheduler",
                               cluster.scheduler_address, *RUN_ARGS, *sys.argv[1:]])
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
