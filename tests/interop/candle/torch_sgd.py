"""The PyTorch side of the candle SGD interop test: resumes a `Linear(3, 2)` and its
`torch.optim.SGD` from a checkpoint written by ckpt-candle, takes more steps on a fixed
batch, and prints the weights and momentum buffers as one JSON line.

    torch_sgd.py --resume FILE --steps K
"""

import argparse
import json

import torch

X = [[1.0, -2.0, 0.5], [0.25, 1.0, -1.0]]
Y = [[1.0, 0.0], [0.0, 1.0]]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--resume", required=True)
    parser.add_argument("--steps", type=int, required=True)
    args = parser.parse_args()

    checkpoint = torch.load(args.resume)
    model = torch.nn.Linear(3, 2)
    model.load_state_dict(checkpoint["model"])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    optimizer.load_state_dict(checkpoint["optimizer"])
    x, y = torch.tensor(X), torch.tensor(Y)
    for _ in range(args.steps):
        loss = ((model(x) - y) ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    state = optimizer.state_dict()
    print(json.dumps({
        "params": {k: v.flatten().tolist() for k, v in model.state_dict().items()},
        "momentum": {str(i): s["momentum_buffer"].flatten().tolist()
                     for i, s in state["state"].items()},
        "group": {k: v for k, v in state["param_groups"][0].items() if k != "params"},
    }))


if __name__ == "__main__":
    main()
