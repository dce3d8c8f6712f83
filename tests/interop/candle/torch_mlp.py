"""The PyTorch side of the candle interop tests: the MLP, data and AdamW of
crates/ckpt-candle/examples/train_mlp.rs, in torch.

    torch_mlp.py --max-iter N --out FILE [--resume FILE] [--optimizer adamw|sgd]

Trains iterations [start, N) (start = 0, or the resumed checkpoint's "iteration" + 1) and saves
torch.save({"model": ..., "optimizer": ..., "iteration": N - 1}, FILE). Prints one JSON line:
the iteration, each parameter's values, the optimizer's step per parameter index (AdamW) and
its learning rate.

With --optimizer sgd (the burn adapter's SGD example) the optimizer is SGD with momentum,
stepped by a StepLR schedule after every iteration, and the checkpoint also holds
"scheduler"; the JSON line adds the schedule's last_epoch.
"""

import argparse
import json

import torch

IN, HIDDEN, OUT = 16, 64, 4
SAMPLES, BATCH = 512, 32
DATA_SEED, INIT_SEED = 2024, 7
MASK = (1 << 64) - 1
LR, WEIGHT_DECAY = 1e-2, 1e-2
# --optimizer sgd: SGD with momentum and a StepLR schedule (gamma a power of two, so that
# torch's chained products and a closed form give the same rate).
SGD_LR, SGD_MOMENTUM, STEP_SIZE, GAMMA = 5e-2, 0.9, 10, 0.5


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def next_f32(self):
        # Exact in float32, as in Rust.
        return (self.next_u64() >> 40) / float(1 << 23) - 1.0


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(IN, HIDDEN)
        self.fc2 = torch.nn.Linear(HIDDEN, OUT)
        rng = SplitMix64(INIT_SEED)
        with torch.no_grad():
            for name, p in self.named_parameters():
                bound = 1.0 / (IN if name.startswith("fc1") else HIDDEN) ** 0.5
                values = [rng.next_f32() * bound for _ in range(p.numel())]
                p.copy_(torch.tensor(values, dtype=torch.float32).reshape(p.shape))

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def synthetic_data():
    rng = SplitMix64(DATA_SEED)
    x = torch.tensor([rng.next_f32() for _ in range(SAMPLES * IN)], dtype=torch.float32)
    x = x.reshape(SAMPLES, IN)
    y = torch.stack([x[:, j] * x[:, j + 4] + 0.5 * x[:, j + 8] for j in range(OUT)], dim=1)
    return x, y


def batch_indices(iteration):
    per_epoch = SAMPLES // BATCH
    epoch = iteration // per_epoch
    rng = SplitMix64(DATA_SEED ^ ((epoch * 0x5851F42D4C957F2D) & MASK))
    order = list(range(SAMPLES))
    for i in range(SAMPLES - 1, 0, -1):
        j = rng.next_u64() % (i + 1)
        order[i], order[j] = order[j], order[i]
    start = (iteration % per_epoch) * BATCH
    return order[start:start + BATCH]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-iter", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--resume")
    parser.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    args = parser.parse_args()

    torch.set_num_threads(1)
    model = Mlp()
    scheduler = None
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=SGD_LR, momentum=SGD_MOMENTUM)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, STEP_SIZE, GAMMA)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    start = 0
    if args.resume:
        checkpoint = torch.load(args.resume)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        start = checkpoint["iteration"] + 1

    x, y = synthetic_data()
    for iteration in range(start, args.max_iter):
        idx = torch.tensor(batch_indices(iteration))
        loss = ((model(x[idx]) - y[idx]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()

    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "iteration": args.max_iter - 1}
    if scheduler is not None:
        checkpoint["scheduler"] = scheduler.state_dict()
    torch.save(checkpoint, args.out)
    steps = {str(i): float(s["step"]) for i, s in optimizer.state_dict()["state"].items()
             if "step" in s}
    params = {k: v.flatten().tolist() for k, v in model.state_dict().items()}
    result = {"iteration": args.max_iter - 1, "params": params, "steps": steps,
              "started_at": start, "lr": optimizer.param_groups[0]["lr"]}
    if scheduler is not None:
        result["last_epoch"] = scheduler.last_epoch
    print(json.dumps(result))


if __name__ == "__main__":
    main()
