"""The columns of a result row: what one measured cell records (docs/design.md, "Cell").

One row per (run, cell). This list is the contract between the cell runner, the store
(``pinnbench.load_results`` returns a DataFrame with exactly these columns) and the report.
JSON columns hold JSON text in the store and are decoded by ``load_results``.
"""

from __future__ import annotations

#: cell statuses; every one but ``error`` is a result (exit code 0). ``diverged``: a non-finite
#: loss or error, or one that blew up by the rule of :mod:`pinnbench.judge.verdict`
STATUSES = ("ok", "oom", "timeout", "diverged", "error", "skipped")

#: name -> (type, meaning)
COLUMNS: dict[str, tuple[str, str]] = {
    "run_id": ("str", "id of the sweep (one `pinnbench run` invocation) that produced the row"),
    "cell_id": ("str", "hash of the cell's canonical spec (same spec, same id)"),
    "problem": ("str", "problem id, e.g. poisson-2body-v1"),
    "dim": ("int", "spatial dimension d"),
    "solver": ("str", "canonical solver spec with every parameter, e.g. sdze[eps=0.001,...]"),
    "solver_name": ("str", "solver family: bp, zo, sdze, ..."),
    "solver_params": ("json", "dict of the solver's parameters"),
    "seed": ("int", "seed of the problem, model and solver"),
    "steps": ("int", "training steps asked for"),
    "time_budget_s": ("float", "wall-clock budget for training, or NaN"),
    "width": ("int", "MLP width"),
    "depth": ("int", "hidden layers"),
    "device": ("str", "cpu, cuda, cuda:1"),
    "dtype": ("str", "float32 or float64"),
    "status": ("str", "one of STATUSES (diverged: pinnbench.judge.verdict's rule)"),
    "message": ("str", "why the status (error text, OOM message, skip reason), else ''"),
    "steps_done": ("int", "training steps actually run"),
    "setup_time_s": ("float", "problem + model + solver set-up, with compiling the closed forms "
                              "at d >= 65,536 (CUDA context creation excluded: provenance "
                              "cuda_init_time_s)"),
    "time_per_step_s": ("float", "median time of the timed steps (after warm-up, synchronised)"),
    "time_per_step_iqr_s": ("float", "interquartile range of the timed steps"),
    "data_time_per_step_s": ("float", "median time per timed step spent drawing the step's "
                                      "points, source values and probes (Solver.draw; "
                                      "pinnbench/maths/step_data.py), or null for a solver that "
                                      "does not draw through it"),
    "solver_time_per_step_s": ("float", "median of (step time - its data time) over the timed "
                                        "steps: the solver's own work"),
    "total_time_s": ("float", "wall time of the whole cell"),
    "peak_cpu_bytes": ("int", "peak RSS of the cell process during training (reset after set-up)"),
    "baseline_cpu_bytes": ("int", "RSS of the cell process at the reset (after set-up)"),
    "peak_gpu_allocated_bytes": ("int", "torch.cuda.max_memory_allocated during training, or null"),
    "peak_gpu_reserved_bytes": ("int", "torch.cuda.max_memory_reserved during training, or null"),
    "baseline_gpu_allocated_bytes": ("int", "torch.cuda.memory_allocated at the reset (after "
                                            "set-up: parameters and solver state), or null"),
    "step_tensor_peak_bytes": ("int", "CPU: the most bytes the tensors of one step hold at once "
                                      "(pinnbench.memory.cpu_tensor_peak_bytes: exact, where "
                                      "peak_cpu_bytes carries the heap's slack), from one more "
                                      "step after training and every use of its model; null on "
                                      "a GPU, in a sharded cell, or when the cell is not ok"),
    "tensor_peak_above_baseline_bytes": ("int", "CPU: step_tensor_peak_bytes plus the growth of "
                                                "the live tensors' bytes from the baseline to "
                                                "the end of training (the state the solver "
                                                "built: optimiser moments, momentum terms); the "
                                                "exact analogue of a GPU cell's allocated peak "
                                                "above its baseline; null where the former is"),
    "n_params": ("int", "number of model parameters"),
    "param_bytes": ("int", "bytes of the model parameters"),
    "final_rel_l2": ("float", "relative L2 error on the test set at the end"),
    "final_rel_l1": ("float", "relative L1 error at the end"),
    "final_max_abs": ("float", "max absolute error at the end"),
    "best_rel_l2": ("float", "best relative L2 along the curve"),
    "best_step": ("int", "step of best_rel_l2"),
    "final_loss": ("float", "last loss estimate returned by step()"),
    "curve": ("json", "list of {step, time_s, cpu_time_s, loss, rel_l2, rel_l1, max_abs} at "
                      "log-spaced steps (time_s: summed wall time of the steps; cpu_time_s: "
                      "the cell process's CPU time in them, time.process_time)"),
    "floor_const_rel_l2": ("float", "rel L2 of the best A(x)*c fit: least squares on the test "
                                    "set, the family's minimum of the reported metric"),
    "floor_affine_rel_l2": ("float", "rel L2 of the best A(x)*(a + b.x) fit on the test set; null "
                                     "where the test set has < 4(D+1) points (floor_method)"),
    "final_rel_l2_lo": ("float", "95 % interval of final_rel_l2 over the draw of the test "
                                 "points, lower end (delta method, pinnbench/judge/intervals.py)"),
    "final_rel_l2_hi": ("float", "95 % interval of final_rel_l2, upper end"),
    "final_rel_l1_lo": ("float", "95 % interval of final_rel_l1, lower end"),
    "final_rel_l1_hi": ("float", "95 % interval of final_rel_l1, upper end"),
    "best_rel_l2_lo": ("float", "95 % interval of best_rel_l2 (the interval of that evaluation; "
                                "the choice of the best step is not accounted for), lower end"),
    "best_rel_l2_hi": ("float", "95 % interval of best_rel_l2, upper end"),
    "floor_const_rel_l2_lo": ("float", "95 % interval of floor_const_rel_l2, lower end"),
    "floor_const_rel_l2_hi": ("float", "95 % interval of floor_const_rel_l2, upper end"),
    "floor_affine_rel_l2_lo": ("float", "95 % interval of floor_affine_rel_l2, lower end"),
    "floor_affine_rel_l2_hi": ("float", "95 % interval of floor_affine_rel_l2, upper end"),
    "floor_points": ("int", "test points the floors were fitted and scored on"),
    "floor_method": ("str", "how the floors were computed, and why an affine floor is absent"),
    "final_val_rel_l2": ("float", "relative L2 error on the validation set (its own random "
                                  "stream, never the test set's) at the end, when the cell was "
                                  "asked for it (--validation; pinnbench tune), else null"),
    "final_val_rel_l2_lo": ("float", "95 % interval of final_val_rel_l2, lower end"),
    "final_val_rel_l2_hi": ("float", "95 % interval of final_val_rel_l2, upper end"),
    "diagnostics": ("json", "estimator diagnostics recorded after training when asked "
                            "(--diagnostics; pinnbench/cells/diagnostics.py), else null"),
    "ranks": ("int", "processes the input dimension was sharded over (1: not sharded; "
                     "docs/sharding.md)"),
    "rank_measurements": ("json", "a sharded cell's ranks, each {rank, columns [lo, hi), how "
                                  "it ended, peak_cpu_bytes, peak_gpu_allocated_bytes, "
                                  "time_per_step_s, comm_time_per_step_s (median over the "
                                  "timed steps), collectives, bytes_communicated}; null for "
                                  "one rank"),
    "provenance": ("json", "pinnbench version, git sha/dirty, torch/CUDA versions, device, CPU, "
                           "threads, host, command line"),
    "started_at": ("str", "ISO 8601 UTC"),
    "finished_at": ("str", "ISO 8601 UTC"),
}

JSON_COLUMNS = tuple(k for k, (t, _) in COLUMNS.items() if t == "json")
