"""Where a training step's GPU time goes: torch.profiler over 3 steps of sdze and bp (after 3
warm-up steps) on poisson-2body-v1 at d = 1e6 and 1e7, beside the synchronised time of 5 steps and
of drawing the step's 100 points and their source values alone. Needs one CUDA GPU (~40 s on an
H200); reports/gpu-h200/profile.txt is its output.

    python scripts/gpu_profile.py
"""
import time

import torch
from torch.profiler import ProfilerActivity, profile

import pinnbench
from pinnbench.solver import solver_from_spec
dev = torch.device("cuda")
for d in (10**6, 10**7):
    for spec in ("sdze", "bp"):
        p = pinnbench.make_problem("poisson-2body-v1", dim=d, seed=0, device=dev)
        g = torch.Generator(device=dev).manual_seed(0)
        m = pinnbench.make_model(p, width=128, depth=3, generator=g)
        s = solver_from_spec(spec); s.setup(p, m, torch.Generator(device=dev).manual_seed(1))
        for _ in range(3): s.step()
        torch.cuda.synchronize(); t = time.perf_counter()
        for _ in range(5): s.step()
        torch.cuda.synchronize(); step = (time.perf_counter() - t) / 5
        # the data alone: points and source
        torch.cuda.synchronize(); t = time.perf_counter()
        for _ in range(5):
            x = p.sample_interior(100, g); f = p.source(x)
        torch.cuda.synchronize(); data = (time.perf_counter() - t) / 5
        print(f"\n### {spec} d={d:.0e}: step {step*1e3:.1f} ms; sample(100)+source alone {data*1e3:.1f} ms", flush=True)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(3): s.step()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=40), flush=True)
        del s, m, p; torch.cuda.empty_cache()
