#!/usr/bin/env python3
"""A stand-in for the `ckpt` command built on torch, to check the interop matrix itself.

`matrix.py --self-test` runs the matrix against this script instead of the Rust binary: every
case must pass, which shows that the matrix's expectations are what torch itself does. It
implements the part of the CLI contract the matrix uses:

    reference_cli.py inspect FILE --json
    reference_cli.py convert IN OUT [--tensors-only] [--key KEY]

It trusts its input (it unpickles with weights_only=False): never point it at untrusted files.
"""

import argparse
import json
import os
import pickle
import sys
import zipfile

import numpy as np
import torch
from safetensors.torch import save_file

SAFETENSORS_DTYPES = {
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.uint16, torch.uint32, torch.uint64, torch.bool,
    torch.float8_e4m3fn, torch.float8_e5m2,
}


def read(path):
    """(format name, value) of a torch file or a plain (numpy) pickle."""
    if zipfile.is_zipfile(path):
        return "torch-zip", torch.load(path, weights_only=False)
    try:
        return "torch-legacy", torch.load(path, weights_only=False)
    except Exception:  # noqa: BLE001 - not a torch stream: try a plain pickle
        with open(path, "rb") as f:
            return "pickle", pickle.load(f, encoding="latin1")


def numpy_to_torch(obj):
    if isinstance(obj, (np.ndarray, np.generic)):
        a = np.asarray(obj)
        return torch.from_numpy(np.array(a, dtype=a.dtype.newbyteorder("="), order="C", copy=True))
    if isinstance(obj, dict):
        out = obj.copy()  # keeps the type (dict, OrderedDict, Counter) and key order
        for k, v in obj.items():
            out[k] = numpy_to_torch(v)
        if hasattr(obj, "__dict__"):
            out.__dict__.update(obj.__dict__)
        return out
    if isinstance(obj, (list, tuple)) and not isinstance(obj, torch.Size):
        return type(obj)(numpy_to_torch(v) for v in obj)
    return obj


def walk(obj, path=()):
    if isinstance(obj, (torch.Tensor, np.ndarray, np.generic)):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from walk(v, path + (k,))
    elif isinstance(obj, (list, tuple)) and not isinstance(obj, torch.Size):
        for i, v in enumerate(obj):
            yield from walk(v, path + (i,))
    else:
        yield path, obj


def entry(path, value):
    if isinstance(value, (np.ndarray, np.generic)):
        a = np.asarray(value)
        t = torch.from_numpy(np.array(a, dtype=a.dtype.newbyteorder("="), order="C", copy=True))
        kind_type = "numpy.ndarray"
    elif isinstance(value, torch.Tensor):
        t, kind_type = value, ("Parameter" if isinstance(value, torch.nn.Parameter) else "Tensor")
    else:
        return {"path": list(path), "kind": "value", "type": type(value).__name__, "repr": repr(value)[:60], "opaque": False}
    return {
        "path": list(path), "kind": "tensor", "type": kind_type, "dtype": str(t.dtype).removeprefix("torch."),
        "shape": list(t.shape), "bytes": t.numel() * t.element_size(),
    }


def inspect(args):
    fmt, value = read(args.file)
    entries = [entry(p, v) for p, v in walk(value)]
    tensors = [e for e in entries if e["kind"] == "tensor"]
    totals = {"tensors": len(tensors), "bytes": sum(e["bytes"] for e in tensors)}
    print(json.dumps({"format": fmt, "entries": entries, "totals": totals}, default=str))


def convert(args):
    _, value = read(args.input)
    value = numpy_to_torch(value)
    if args.key:
        value = value[args.key]
    if args.output.endswith(".safetensors"):
        flat = {}
        for path, v in walk(value):
            if isinstance(v, torch.Tensor):
                if v.dtype not in SAFETENSORS_DTYPES:
                    sys.exit(f"error: {args.input}: safetensors cannot hold dtype {v.dtype} ({list(path)})")
                flat[".".join(str(p) for p in path)] = v.detach().contiguous().clone()
            elif not args.tensors_only:
                sys.exit(f"error: {args.input}: non-tensor value at {list(path)}")
        save_file(flat, args.output)
    elif os.path.splitext(args.output)[1] in (".pt", ".pth"):
        torch.save(value, args.output)
    else:
        sys.exit(f"error: unknown output extension: {args.output}")


def main(argv=None):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("convert")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--tensors-only", action="store_true")
    p.add_argument("--key")
    args = parser.parse_args(argv)
    inspect(args) if args.command == "inspect" else convert(args)


if __name__ == "__main__":
    main()
