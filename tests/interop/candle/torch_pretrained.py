"""The PyTorch side of the candle pretrained-weights and parameter-order tests: trains two small
networks a few steps and writes their weights in the layouts users meet, then prints, as one
JSON line, an input batch, each network's output on it (eval mode) and the optimizer moments
by parameter name.

    torch_pretrained.py OUT_DIR

Files written to OUT_DIR:
- detectron2.pth   torch.save({"model": net.state_dict(), "optimizer": ..., "iteration": 4})
- lightning.ckpt   {"state_dict": {"net." + name: ...}, "epoch": 2, "hyper_parameters": {...}}
- legacy.pt        net.state_dict() in the pre-1.6 format (_use_new_zipfile_serialization=False)
- net.safetensors  net.state_dict() as safetensors, float16
- mlp_named.pth    {"model": mlp.state_dict(), "optimizer": AdamW(mlp.named_parameters())...}
- mlp_unnamed.pth  the same with AdamW(mlp.parameters()) (no param_names)
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file


class Net(torch.nn.Module):
    """Parameters in an order that sorting the names would change: stem, bn, head."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Linear(4, 8)
        self.bn = torch.nn.BatchNorm1d(8)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.stem(x))))


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Linear(4, 8)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.stem(x)))


def train(model, optimizer, x, steps):
    model.train()
    for _ in range(steps):
        loss = (model(x) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    x = torch.randn(5, 4)

    net = Net()
    net_opt = torch.optim.AdamW(net.parameters(), lr=0.05)
    train(net, net_opt, x, 4)
    sd = net.state_dict()
    torch.save({"model": sd, "optimizer": net_opt.state_dict(), "iteration": 4},
               os.path.join(out, "detectron2.pth"))
    torch.save({"state_dict": {"net." + k: v for k, v in sd.items()}, "epoch": 2,
                "hyper_parameters": {"lr": 0.05, "name": "net"}},
               os.path.join(out, "lightning.ckpt"))
    torch.save(sd, os.path.join(out, "legacy.pt"), _use_new_zipfile_serialization=False)
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    save_file(half, os.path.join(out, "net.safetensors"))
    with torch.no_grad():
        y = net(x)
        net_half = Net()
        net_half.load_state_dict({k: v.float() if v.is_floating_point() else v
                                  for k, v in half.items()})
        net_half.eval()
        y_half = net_half(x)

    moments = {}
    for name, named in (("mlp_named.pth", True), ("mlp_unnamed.pth", False)):
        torch.manual_seed(1)
        mlp = Mlp()
        params = mlp.named_parameters() if named else mlp.parameters()
        opt = torch.optim.AdamW(params, lr=0.05)
        train(mlp, opt, x, 3)
        torch.save({"model": mlp.state_dict(), "optimizer": opt.state_dict(), "iteration": 2},
                   os.path.join(out, name))
        names = [n for n, _ in mlp.named_parameters()]
        moments[name] = {names[i]: s["exp_avg"].flatten().tolist()
                         for i, s in opt.state_dict()["state"].items()}

    print(json.dumps({
        "x": x.tolist(),
        "y": y.tolist(),
        "y_half": y_half.tolist(),
        "exp_avg": moments,
        "names": list(sd.keys()),
    }))


if __name__ == "__main__":
    main()
