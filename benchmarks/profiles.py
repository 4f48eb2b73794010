"""Which cells the asv suite measures: PINNBENCH_ASV_PROFILE=fast (default) or full.

fast: CPU, d = 10^2 and 10^3, width 32, one torch thread: the whole suite runs in a few minutes
(CI runs it). One thread because on a shared 2-core machine torch's intra-op threads wait on
each other and a step's time varies by 10-100x with the load; one thread measures the code.
full: the GPU when one is present, d = 10^3 ... 10^7, width 128 (the published setting), torch's
default threads; the error after training only up to d = 10^5 (300 steps), so that the whole
profile stays within minutes on one GPU (steps take 0.2-0.3 s at d = 10^7 on an H200).
"""

import os

import torch

PROFILE = os.environ.get("PINNBENCH_ASV_PROFILE", "fast")
if PROFILE not in ("fast", "full"):
    raise ValueError(f"PINNBENCH_ASV_PROFILE must be fast or full, got {PROFILE!r}")

PROBLEM = "poisson-2body-v1"
SOLVERS = ["sdze", "bp", "zo"]
if PROFILE == "fast":
    DIMS = [100, 1000]
    ERROR_DIMS = DIMS
    WIDTH = 32
    DEVICE = "cpu"
    TRAIN_STEPS = 100
    THREADS = 1
else:
    DIMS = [10**3, 10**4, 10**5, 10**6, 10**7]
    ERROR_DIMS = [10**3, 10**4, 10**5]
    WIDTH = 128
    DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    TRAIN_STEPS = 300
    THREADS = None  # torch's default

if THREADS is not None:
    torch.set_num_threads(THREADS)
