"""Starting DeepSpeed's process group for a trial, without its CPU shared-memory all-reduce.

On the CPU accelerator, ``deepspeed.init_distributed`` JIT-builds and loads the
``deepspeed_shm_comm`` op and every rank creates a 64 MiB+ segment named
``/dev/shm/deepspeed_allreduce_buffer_<uid>_<addr>_<port>_<rank>`` that is never unlinked
(deepspeed/comm/torch.py ``TorchBackend.__init__``; ops/csrc/cpu/comm/shm.cpp ``shm_initialize``).
The op only serves ``inference_all_reduce`` (tensor-parallel inference); training reduces through
gloo. A sweep of a few hundred trials filled 21 GB of RAM-backed ``/dev/shm`` that way, and where
``/dev/shm`` is small (containers default to 64 MiB) the first rank cannot even start. So trials
mark the op incompatible before DeepSpeed looks at it: no build, no segment, nothing left behind.
"""

from __future__ import annotations

SHM_COMM_OP = "deepspeed_shm_comm"
"""``ShareMemCommBuilder.NAME`` in deepspeed/ops/op_builder/cpu/comm.py."""


def init_distributed(backend: str | None = None) -> None:
    """``deepspeed.init_distributed`` with the shared-memory all-reduce op switched off."""
    import deepspeed
    import deepspeed.ops

    # build_shm_op() returns None for an op missing from this table (deepspeed/comm/torch.py).
    deepspeed.ops.__compatible_ops__[SHM_COMM_OP] = False
    if backend is None:
        deepspeed.init_distributed()
    else:
        deepspeed.init_distributed(dist_backend=backend)
