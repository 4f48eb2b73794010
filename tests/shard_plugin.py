"""A plugin for tests/test_sharding.py: a ball problem whose rank 1 raises in its first step's
ansatz jet when it runs sharded (one process: it is poisson-2body-v1)."""

import torch.distributed as dist

from pinnbench.maths.problem_registry import register_problem
from pinnbench.problems.ball import PoissonTwoBody


class FailsOnRank1(PoissonTwoBody):
    family = "shard-fails-on-rank-1"

    def ansatz_jet_from(self, *args, **kwargs):
        if dist.is_initialized() and dist.get_rank() == 1:
            raise RuntimeError("planted failure in rank 1's step")
        return super().ansatz_jet_from(*args, **kwargs)


register_problem("shard-fails-on-rank-1-v1", FailsOnRank1)
