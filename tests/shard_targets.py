"""Rank targets of tests/test_sharding.py (``run_ranks("shard_targets:NAME", ...)``): a few runs
in one process group, one step's data and gradients, and the planted failures."""

from __future__ import annotations

import os
import signal
import time

import torch

from pinnbench.cells.sharded_cell import build, train_rank


def runs(payload, comm, rank, ranks, report):
    """train_rank for each payload in ``payload["runs"]``, in one process group."""
    return {"status": "ok", "runs": [train_rank(p, comm, rank, ranks) for p in payload["runs"]]}


def one_step(payload, comm, rank, ranks, report=None):
    """This rank's columns of one step's points and probes (or the sampled coordinates and
    which of them this rank owns), the loss, and the gradients of W0
    (this shard's columns) and of the replicated W1, b0 after one backward pass."""
    view, model, solver = build(payload, comm, rank, ranks)
    data = solver.draw()
    loss = solver.residual_loss(data)
    loss.backward()
    (group,) = data.probes[0].groups.values()
    dirs = group.dirs  # dense probes' columns of this shard, or the global sampled coordinates
    probes = {"v": dirs.v.tolist()} if hasattr(dirs, "v") else {
        "index": dirs.index.tolist(), "owned": dirs.owned.tolist()}
    return {"status": "ok", "x": data.x.tolist(), **probes,
            "source": data.source.tolist(), "loss": float(loss.detach()),
            "grad_w0": model.params[0].grad.tolist(), "grad_b0": model.params[1].grad.tolist(),
            "grad_w1": model.params[2].grad.tolist(), "collectives": comm.calls}


def raises(payload, comm, rank, ranks, report):
    if rank == 1:
        raise RuntimeError("planted failure on rank 1")
    return runs(payload, comm, rank, ranks, report)


def killed(payload, comm, rank, ranks, report):
    if rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return runs(payload, comm, rank, ranks, report)


def silent(payload, comm, rank, ranks, report):
    """Rank 1 never joins the collective that rank 0 waits in."""
    if rank == 1:
        time.sleep(600)
    comm.sum(torch.ones(3))
    return {"status": "ok"}


def other_seed(payload, comm, rank, ranks, report):
    """Rank 1 is given another seed than rank 0."""
    return runs({"runs": [{**p, "seed": p.get("seed", 0) + rank} for p in payload["runs"]]},
                comm, rank, ranks, report)


def other_solver_seed(payload, comm, rank, ranks, report):
    """Rank 1's solver stream differs from rank 0's (the cell's and the model's seeds agree)."""
    from pinnbench.cells import sharded_cell

    if rank == 1:
        real = sharded_cell.cell_generator
        sharded_cell.cell_generator = lambda seed, stream, device: real(
            seed + (stream == "solver"), stream, device)
    return runs(payload, comm, rank, ranks, report)
