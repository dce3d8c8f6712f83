#!/usr/bin/env python3
"""Live interop: models saved whole (`torch.save(model)`) through `ckpt convert` and back.

For each model, saved by itself and inside a checkpoint dict, this script

1. runs `ckpt convert` to a torch file and to safetensors and checks that
   `torch.load(weights_only=True)` (warnings as errors) and `safetensors` load exactly
   `model.state_dict()`: the same names in the same order (torch output), dtypes, shapes and
   bitwise values, and tied weights still sharing one storage;
2. checks that `ckpt inspect --json` lists every parameter and buffer, and names each with its
   state-dict name.

It prints one line per case and `ok` last; it exits 1 at the first failure.

    python tests/interop/full_model.py --ckpt target/debug/ckpt --workdir /tmp/full_model
"""

import argparse
import json
import os
import subprocess
import sys
import warnings

import torch
from safetensors.torch import load_file


class Tied(torch.nn.Module):
    """A language-model-like module: tied embedding and head, a buffer that is not saved."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False), torch.nn.GELU())
        self.head = torch.nn.Linear(4, 10)
        self.head.weight = self.embed.weight
        self.register_buffer("positions", torch.arange(4))
        self.register_buffer("cache", torch.zeros(2), persistent=False)


class Hooked(torch.nn.Module):
    """A bound method of the module registered as its hook: a reference cycle in the pickle."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)
        self.register_forward_hook(self.hook)

    def hook(self, module, inputs, output):
        return output


def models():
    torch.manual_seed(0)
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 5 * 5, 2),
    ).to(torch.float64)
    conv(torch.randn(2, 3, 5, 5, dtype=torch.float64))
    transformer = torch.nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16)
    lstm = torch.nn.LSTM(3, 4, num_layers=2)
    half = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2)).to(torch.bfloat16)
    return {
        "conv_bn": conv,
        "transformer_layer": transformer,
        "lstm": lstm,
        "tied_custom_class": Tied(),
        "hook_cycle": Hooked(),
        "bfloat16": half,
    }


def run(ckpt, *args):
    proc = subprocess.run([ckpt, *args], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        sys.exit(f"FAIL `ckpt {' '.join(args)}` exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def strict_load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return torch.load(path, weights_only=True)


def check_tensors(name, expected, actual, ordered):
    if ordered and list(actual) != list(expected):
        sys.exit(f"FAIL {name}: names {list(actual)}, state_dict() has {list(expected)}")
    if sorted(actual) != sorted(expected):
        sys.exit(f"FAIL {name}: names {sorted(actual)}, state_dict() has {sorted(expected)}")
    for key, want in expected.items():
        got = actual[key]
        if type(got) is not torch.Tensor or got.dtype != want.dtype or got.shape != want.shape:
            sys.exit(f"FAIL {name}: {key} is {type(got).__name__} {got.dtype} {tuple(got.shape)}")
        if not torch.equal(got.view(-1).view(torch.uint8), want.contiguous().view(-1).view(torch.uint8)):
            sys.exit(f"FAIL {name}: {key} has other values")


def check_sharing(name, expected, actual):
    def groups(sd):
        by_storage = {}
        for key, t in sd.items():
            by_storage.setdefault(t.untyped_storage().data_ptr(), []).append(key)
        return sorted(sorted(g) for g in by_storage.values() if len(g) > 1)

    if groups(actual) != groups(expected):
        sys.exit(f"FAIL {name}: shared storages {groups(actual)}, torch has {groups(expected)}")


def check_inspect(ckpt, name, path, expected, prefix):
    report = json.loads(run(ckpt, "inspect", "--json", path).stdout)
    named = [
        e["state_dict_name"] for e in report["entries"] if e["kind"] == "tensor" and "state_dict_name" in e
    ]
    want = [prefix + key for key in expected]
    if sorted(named) != sorted(want):
        sys.exit(f"FAIL {name}: inspect names {sorted(named)}, state_dict() has {sorted(want)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    for name, model in models().items():
        expected = model.state_dict()
        whole = os.path.join(args.workdir, f"{name}.pt")
        torch.save(model, whole)
        in_dict = os.path.join(args.workdir, f"{name}.in_dict.pt")
        torch.save({"model": model, "iteration": 7}, in_dict)

        out = os.path.join(args.workdir, f"{name}.pth")
        run(args.ckpt, "convert", whole, out)
        loaded = strict_load(out)
        check_tensors(f"{name} -> .pth", expected, loaded, ordered=True)
        check_sharing(f"{name} -> .pth", expected, loaded)

        out = os.path.join(args.workdir, f"{name}.key.pth")
        run(args.ckpt, "convert", in_dict, out, "--key", "model")
        check_tensors(f"{name} --key model -> .pth", expected, strict_load(out), ordered=True)

        out = os.path.join(args.workdir, f"{name}.flat.pth")
        run(args.ckpt, "convert", in_dict, out, "--tensors-only")
        flat = {f"model.{k}": v for k, v in expected.items()}
        check_tensors(f"{name} --tensors-only -> .pth", flat, strict_load(out), ordered=True)

        out = os.path.join(args.workdir, f"{name}.safetensors")
        run(args.ckpt, "convert", whole, out)
        check_tensors(f"{name} -> .safetensors", expected, load_file(out), ordered=False)

        check_inspect(args.ckpt, name, whole, expected, "")
        check_inspect(args.ckpt, name, in_dict, expected, "model.")
        print(f"PASS {name} ({len(expected)} tensors)", flush=True)
    print("ok")


if __name__ == "__main__":
    main()
