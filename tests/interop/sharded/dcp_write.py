"""torch.distributed.checkpoint directories for ckpt's tests (crates/ckpt/tests/it/sharded_dcp.rs).

Usage: python dcp_write.py OUT WORLD [MiB [--no-reference]]
       python dcp_write.py hostile DCP_DIR MARKER

Starts WORLD processes (gloo, CPU) that save one training state with dcp.save into OUT/dcp:
a model whose weights are DTensors sharded along dim 0 (uneven when the rows do not divide),
a replicated DTensor, plain tensors, an Adam optimizer's state after one step (int keys,
param_groups with hyper-parameters), and non-tensor values (iteration, a string, a list,
None). With MiB, the model also holds a DTensor of about that many MiB (the benchmark, which
passes --no-reference and times the conversion itself).
Then writes OUT/reference.pt with torch's own dcp_to_torch_save, and prints OK.

`hostile` rewrites DCP_DIR/.metadata (read here from a directory this script wrote) with a
payload that would create MARKER if the file were unpickled by Python (as DCP's own reader
does): the metadata's storage_meta becomes an object whose __reduce__ calls os.system. It
also writes DCP_DIR/root.pickle, whose root object is that payload, and
DCP_DIR/overlap.pickle, the metadata with two chunks of a tensor overlapping.
"""
import os
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save


def state_for(rank, world, mib):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)  # every rank builds the same full tensors
    weight = torch.randn(7, 5)
    bias = torch.arange(6, dtype=torch.float64)
    embed = torch.randint(-1000, 1000, (9, 3, 2), dtype=torch.int64)
    half = torch.randn(4, 4).to(torch.bfloat16)
    model = {
        "fc.weight": distribute_tensor(weight, mesh, [Shard(0)]),
        "fc.bias": distribute_tensor(bias, mesh, [Shard(0)]),
        "embed.weight": distribute_tensor(embed, mesh, [Shard(1)]),
        "norm.weight": distribute_tensor(half, mesh, [Replicate()]),
        "buffer": torch.tensor([1, 2, 3], dtype=torch.int32),
        "scalar": torch.tensor(2.5),
    }
    if mib:
        rows = mib * (1 << 20) // (4 * 1024)
        model["big.weight"] = distribute_tensor(torch.randn(rows, 1024), mesh, [Shard(0)])
    param = torch.nn.Parameter(torch.randn(3, 2))
    optim = torch.optim.Adam([param], lr=0.01, betas=(0.9, 0.99))
    param.grad = torch.ones(3, 2)
    optim.step()
    return {
        "model": model,
        "optim": optim.state_dict(),
        "iteration": 1234,
        "extra": {"name": "run-7", "history": [1, 2, 3], "nothing": None, "lr": 0.5},
    }


def run(rank, world, out, mib):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        dcp.save(state_for(rank, world, mib), checkpoint_id=os.path.join(out, "dcp"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile(directory, marker):
    import pickle

    metadata = dcp.FileSystemReader(directory).read_metadata()
    metadata.storage_meta = Payload(marker)
    with open(os.path.join(directory, ".metadata"), "wb") as f:
        pickle.dump(metadata, f)
    with open(os.path.join(directory, "root.pickle"), "wb") as f:
        pickle.dump(Payload(marker), f)
    # The second chunk of model.fc.weight moved up a row: it overlaps the first.
    metadata.storage_meta = None
    chunks = metadata.state_dict_metadata["model.fc.weight"].chunks
    chunks[1].offsets = torch.Size([chunks[1].offsets[0] - 1, 0])
    with open(os.path.join(directory, "overlap.pickle"), "wb") as f:
        pickle.dump(metadata, f)
    print("OK")


def main():
    if sys.argv[1] == "hostile":
        return hostile(sys.argv[2], sys.argv[3])
    out, world = sys.argv[1], int(sys.argv[2])
    mib = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    mp.spawn(run, args=(world, out, mib), nprocs=world, join=True)
    if "--no-reference" not in sys.argv:
        dcp_to_torch_save(os.path.join(out, "dcp"), os.path.join(out, "reference.pt"))
    print("OK")


if __name__ == "__main__":
    main()
