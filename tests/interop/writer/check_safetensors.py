"""Cross-checks safetensors files with ckpt (crates/ckpt/tests/it/write_safetensors.rs).

Usage: python check_safetensors.py OURS THEIRS

Loads OURS (written by ckpt) with safetensors.torch and safetensors.numpy and compares it
with an expectation built here; then writes THEIRS with safetensors.torch.save_file from the
same expectation for ckpt to read. Prints ALL OK on success, exits 1 otherwise.
"""
import math
import sys
import warnings

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

warnings.simplefilter("error")

DTYPES = [torch.bool, torch.uint8, torch.int8, torch.float8_e5m2, torch.float8_e4m3fn,
          torch.int16, torch.uint16, torch.float16, torch.bfloat16, torch.int32, torch.uint32,
          torch.float32, torch.float64, torch.int64, torch.uint64]


def pattern(dtype, shape):
    n = math.prod(shape) * dtype.itemsize
    if dtype == torch.bool:
        data = bytes(i % 2 for i in range(n))
    else:
        data = bytes((i * 37 + 11) % 256 for i in range(n))
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype).reshape(shape)


def expected():
    d = {str(dt).removeprefix("torch."): pattern(dt, (2, 3)) for dt in DTYPES}
    d["transposed"] = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()
    d["scalar"] = torch.tensor(2.5, dtype=torch.float64)
    d["empty"] = torch.zeros(0, 5)
    return d


def raw(t):
    t = t.contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def main():
    ours, theirs = sys.argv[1], sys.argv[2]
    errors = []
    exp = expected()
    got = load_file(ours)
    if sorted(got) != sorted(exp):
        errors.append(f"keys {sorted(got)} != {sorted(exp)}")
    for k, e in exp.items():
        a = got.get(k)
        if a is None:
            continue
        if a.dtype != e.dtype or a.shape != e.shape or raw(a) != raw(e):
            errors.append(f"torch {k}: {a.dtype}{tuple(a.shape)} != {e.dtype}{tuple(e.shape)} or data")
    with safe_open(ours, framework="np") as f:
        if f.metadata() != {"format": "pt"}:
            errors.append(f"metadata {f.metadata()}")
        for k in f.keys():
            if exp[k].dtype in (torch.bfloat16, torch.float8_e5m2, torch.float8_e4m3fn):
                continue  # numpy has no such dtype
            a = f.get_tensor(k)
            e = exp[k].contiguous().numpy()
            if a.dtype != e.dtype or a.shape != e.shape or a.tobytes() != e.tobytes():
                errors.append(f"numpy {k}: {a.dtype}{a.shape} != {e.dtype}{e.shape} or data")
    exp["transposed"] = exp["transposed"].contiguous()
    save_file(exp, theirs, metadata={"format": "pt"})
    if errors:
        print("\n".join(errors))
        sys.exit(1)
    print("ALL OK")


if __name__ == "__main__":
    main()
