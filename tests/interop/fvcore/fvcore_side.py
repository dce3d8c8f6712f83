"""The Python side of the fvcore interop test: train, save and resume with fvcore's
Checkpointer and PeriodicCheckpointer in a directory that a Rust run shares.

    python fvcore_side.py train DIR --max-iter 40 --period 10 --max-to-keep 2 [--stop-at N]
    python fvcore_side.py verify DIR

Both print one JSON line: the iteration, the parameters and the SGD momentum buffers
(flat lists of float32 values), so the Rust test can compare them bit for bit.

The model matches the Rust example's (crates/ckpt/examples/train/mlp.rs): two Linear
layers fc1 (4 -> 8) and fc2 (8 -> 1) with tanh, on the same synthetic data.
"""

import argparse
import json
import logging
import os
import sys

import torch
from torch import nn
from fvcore.common.checkpoint import Checkpointer, PeriodicCheckpointer

INPUTS, HIDDEN, SAMPLES = 4, 8, 64


class Lcg:
    """Same generator as the Rust example: floats in [-1, 1) exact in float32."""

    def __init__(self, seed):
        self.state = seed

    def next(self):
        self.state = (self.state * 1664525 + 1013904223) & 0xFFFFFFFF
        return (self.state >> 8) / 16777216.0 * 2.0 - 1.0


def synthetic_data():
    rng = Lcg(7)
    x = torch.tensor([rng.next() for _ in range(SAMPLES * INPUTS)], dtype=torch.float32)
    x = x.reshape(SAMPLES, INPUTS)
    y = 0.5 * x[:, 0] - x[:, 1] * x[:, 2] + 0.3 * x[:, 3] * x[:, 3]
    return x, y.reshape(SAMPLES, 1)


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(INPUTS, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, 1)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def build(save_dir):
    os.makedirs(save_dir, exist_ok=True)
    torch.manual_seed(0)
    model = Mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    checkpointer = Checkpointer(model, save_dir, optimizer=optimizer)
    return model, optimizer, checkpointer


def snapshot(model, optimizer, iteration):
    params = {name: p.detach().reshape(-1).tolist() for name, p in model.state_dict().items()}
    momentum = {}
    for name, p in model.named_parameters():
        state = optimizer.state.get(p, {})
        buf = state.get("momentum_buffer")
        if buf is not None:
            momentum[name] = buf.reshape(-1).tolist()
    return {"iteration": iteration, "params": params, "momentum": momentum}


def train(args):
    model, optimizer, checkpointer = build(args.dir)
    periodic = PeriodicCheckpointer(
        checkpointer, args.period, max_iter=args.max_iter, max_to_keep=args.max_to_keep
    )
    start = checkpointer.resume_or_load("", resume=True).get("iteration", -1) + 1
    x, y = synthetic_data()
    iteration = start - 1
    for iteration in range(start, args.max_iter):
        optimizer.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        optimizer.step()
        periodic.step(iteration)
        if iteration == args.stop_at:
            break
    return snapshot(model, optimizer, iteration)


def verify(args):
    model, optimizer, checkpointer = build(args.dir)
    # Scramble the fresh model so that only a real load can produce the saved values.
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(123.0)
    extra = checkpointer.resume_or_load("", resume=True)
    return snapshot(model, optimizer, extra.get("iteration"))


def main():
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("dir")
    t.add_argument("--max-iter", type=int, default=40)
    t.add_argument("--period", type=int, default=10)
    t.add_argument("--max-to-keep", type=int, default=None)
    t.add_argument("--stop-at", type=int, default=None)
    v = sub.add_parser("verify")
    v.add_argument("dir")
    args = parser.parse_args()
    result = train(args) if args.command == "train" else verify(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
