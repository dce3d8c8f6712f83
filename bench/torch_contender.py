#!/usr/bin/env python3
"""The Python contenders of ckpt-bench: torch.save / torch.load, safetensors' save_file /
load_file, fvcore's Checkpointer, and detectron2's quadratic name matching.

ckpt-bench runs this as a server (`serve`): torch is imported once, then every request line
(JSON: op, workload, dir, arg) on stdin is answered by a forked child that runs one measured
operation and sends back one JSON line. Each measurement thus has a process of its own, and
none pays for the interpreter and the torch import inside its timing.

Memory: the child resets its peak RSS (/proc/self/clear_refs), records its RSS as the
baseline (interpreter + torch + the state to save) and reports the peak after the operation.
"""

import json
import os
import sys
import time


def tmpfs_convert_dir(bench_dir):
    """Where ckpt-bench puts the inputs and outputs of its conversion rows on tmpfs: one
    directory per benchmark directory (the same name as ckpt-bench's `tmpfs_dir`)."""
    return "/dev/shm/ckpt-bench-convert" + bench_dir.replace("/", "_")


def rss_and_peak():
    rss = peak = 0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return rss, peak


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(op):
    reset = reset_peak()
    rss_before, _ = rss_and_peak()
    start = time.perf_counter()
    out = op()
    seconds = time.perf_counter() - start
    _, peak = rss_and_peak()
    return {"seconds": seconds, "rss_before": rss_before, "peak_rss": peak, "peak_reset": reset}, out


def remove(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def random_state(torch, specs):
    torch.manual_seed(0)
    return {t["name"]: torch.empty(t["shape"]).uniform_(-1, 1) for t in specs}


def touch(torch, obj):
    """Reads every byte of every tensor in obj (a lazily mapped tensor is faulted in)."""
    if isinstance(obj, torch.Tensor):
        return float(obj.sum()) if obj.is_floating_point() else float(obj.double().sum())
    if isinstance(obj, dict):
        return sum(touch(torch, v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(touch(torch, v) for v in obj)
    return 0.0


def timed_load(torch, load):
    """Times load() alone (open_seconds) and load() + touching every byte (seconds)."""
    opened = {}

    def op():
        start = time.perf_counter()
        value = load()
        opened["seconds"] = time.perf_counter() - start
        return touch(torch, value)

    sample, checksum = measure(op)
    sample["open_seconds"] = opened["seconds"]
    sample["checksum"] = checksum
    return sample


def build_model(torch, tensors, zeros):
    """A module tree whose state_dict has exactly the names, shapes and kinds of tensors."""
    root = torch.nn.Module()
    for t in tensors:
        *path, leaf = t["name"].split(".")
        module = root
        for part in path:
            child = module._modules.get(part)
            if child is None:
                child = torch.nn.Module()
                module.add_module(part, child)
            module = child
        data = torch.zeros(t["shape"]) if zeros else torch.empty(t["shape"]).uniform_(-1, 1)
        if t["buffer"]:
            module.register_buffer(leaf, data)
        else:
            module.register_parameter(leaf, torch.nn.Parameter(data, requires_grad=t["trainable"]))
    return root


def build_training(torch, detectron, zeros):
    """The model and its SGD optimizer (momentum buffers filled unless zeros)."""
    torch.manual_seed(0)
    model = build_model(torch, detectron["model"], zeros)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=detectron["lr"], momentum=detectron["momentum"], weight_decay=0.0001
    )
    if not zeros:
        for p in params:
            p.grad = torch.empty_like(p).uniform_(-1, 1)
        optimizer.step()
        for p in params:
            p.grad = None
    return model, optimizer


def checkpointer(model, optimizer, save_dir):
    import logging

    from fvcore.common.checkpoint import Checkpointer

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    return Checkpointer(model, save_dir, optimizer=optimizer)


def quadratic_match(torch, model_keys, ckpt_keys):
    """detectron2's rule: compare every sorted model key with every sorted checkpoint key,
    keep the longest checkpoint key each model key ends with."""
    model_keys = sorted(model_keys)
    ckpt_keys = sorted(ckpt_keys)
    lengths = [
        len(c) if m == c or m.endswith("." + c) else 0 for m in model_keys for c in ckpt_keys
    ]
    lengths = torch.as_tensor(lengths).view(len(model_keys), len(ckpt_keys))
    best, index = lengths.max(1)
    index[best == 0] = -1
    return int((index >= 0).sum())


def matching_keys(count):
    """The names of ckpt-bench's matching workload (spec.rs builds the same)."""
    params = ["weight", "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var"]
    keys = []
    block = 0
    while len(keys) < count:
        for stage in range(2, 6):
            for conv in ["conv1", "conv2", "conv3", "shortcut"]:
                for param in params:
                    if len(keys) < count:
                        key = f"res{stage}.{block}.{conv}.{param}"
                        keys.append((f"backbone.bottom_up.{key}", key))
        block += 1
    return keys


def run(request):
    import torch

    op, workload, bench_dir = request["op"], request["workload"], request["dir"]
    with open(os.path.join(bench_dir, "spec.json")) as f:
        spec = json.load(f)
    out_dir = os.path.join(bench_dir, "out")
    pth = os.path.join(bench_dir, f"{workload}.pth")
    st = os.path.join(bench_dir, f"{workload}.safetensors")

    if op == "gen":
        if workload == "detectron":
            model, optimizer = build_training(torch, spec["detectron"], zeros=False)
            resume_dir = os.path.join(bench_dir, "detectron")
            os.makedirs(resume_dir, exist_ok=True)
            checkpointer(model, optimizer, resume_dir).save(
                spec["detectron"]["name"], iteration=spec["detectron"]["iteration"]
            )
        else:
            from safetensors.torch import save_file

            state = random_state(torch, spec[workload])
            torch.save(state, pth)
            save_file(state, st)
            if workload == "big":
                # The big state as a checkpoint a Checkpointer resumes from.
                resume_dir = os.path.join(bench_dir, "big-resume")
                os.makedirs(resume_dir, exist_ok=True)
                torch.save({"model": state}, os.path.join(resume_dir, "model_big.pth"))
                with open(os.path.join(resume_dir, "last_checkpoint"), "w") as f:
                    f.write("model_big.pth")
        return {"seconds": 0.0}

    if op in ("torch-save", "torch-save-durable", "st-save"):
        state = random_state(torch, spec[workload])
        if op == "st-save":
            from safetensors.torch import save_file

            out = os.path.join(out_dir, f"st-py-{workload}.safetensors")
            remove(out)
            sample, _ = measure(lambda: save_file(state, out))
        elif op == "torch-save":
            out = os.path.join(out_dir, f"torch-{workload}.pth")
            remove(out)
            sample, _ = measure(lambda: torch.save(state, out))
        else:
            out = os.path.join(out_dir, f"torch-durable-{workload}.pth")
            remove(out)

            def durable():
                torch.save(state, out)
                fsync_path(out)
                fsync_path(out_dir)

            sample, _ = measure(durable)
        return sample

    if op == "torch-convert":
        # ckpt-bench's conversion rows (crates/ckpt-bench/src/convert.rs): bit 0 of arg, on
        # tmpfs; bit 1, to safetensors. The whole file is loaded, then saved, then fsynced.
        arg = int(request["arg"])
        base = tmpfs_convert_dir(bench_dir) if arg & 1 else bench_dir
        to_safetensors = bool(arg & 2)
        source = os.path.join(base, f"{workload}.pth")
        target_dir = os.path.join(base, "out")
        target = os.path.join(target_dir, f"torch-{workload}." + ("safetensors" if to_safetensors else "pth"))
        remove(target)

        def convert():
            state = torch.load(source, weights_only=True)
            if to_safetensors:
                from safetensors.torch import save_file

                save_file(state, target)
            else:
                torch.save(state, target)
            fsync_path(target)
            fsync_path(target_dir)

        sample, _ = measure(convert)
        os.remove(target)
        return sample

    if op == "torch-diff":
        # ckpt-bench's comparison row (crates/ckpt-bench/src/diff.rs): the torch file against
        # its safetensors conversion, every tensor compared exactly (NaN equal to NaN).
        from safetensors.torch import load_file

        def compare():
            a = torch.load(pth, weights_only=True)
            b = load_file(st)
            if a.keys() != b.keys():
                return False
            return all(torch.allclose(a[k], b[k], rtol=0.0, atol=0.0, equal_nan=True) for k in a)

        sample, equal = measure(compare)
        if not equal:
            raise RuntimeError(f"{pth} and {st} differ")
        return sample

    if op == "torch-load":
        return timed_load(torch, lambda: torch.load(pth, weights_only=True))
    if op == "torch-load-mmap":
        return timed_load(torch, lambda: torch.load(pth, weights_only=True, mmap=True))
    if op == "st-load":
        from safetensors.torch import load_file

        return timed_load(torch, lambda: load_file(st))

    if op == "fvcore-save":
        detectron = spec["detectron"]
        model, optimizer = build_training(torch, detectron, zeros=False)
        save_dir = os.path.join(out_dir, "fvcore-detectron")
        remove(os.path.join(save_dir, detectron["name"] + ".pth"))
        saver = checkpointer(model, optimizer, save_dir)
        sample, _ = measure(lambda: saver.save(detectron["name"], iteration=detectron["iteration"]))
        return sample
    if op == "fvcore-resume":
        detectron = spec["detectron"]
        model, optimizer = build_training(torch, detectron, zeros=True)
        loader = checkpointer(model, optimizer, os.path.join(bench_dir, "detectron"))
        sample, extra = measure(lambda: loader.resume_or_load("", resume=True))
        if extra.get("iteration") != detectron["iteration"]:
            raise RuntimeError(f"resumed iteration {extra.get('iteration')}")
        if len(optimizer.state) == 0:
            raise RuntimeError("optimizer state was not restored")
        return sample

    if op == "py-match":
        keys = matching_keys(int(request["arg"]))
        model_keys = [m for m, _ in keys]
        ckpt_keys = [c for _, c in keys]
        sample, matched = measure(lambda: quadratic_match(torch, model_keys, ckpt_keys))
        if matched != len(keys):
            raise RuntimeError(f"matched {matched} of {len(keys)} keys")
        sample["note"] = f"{len(keys)} keys"
        return sample

    raise ValueError(f"unknown Python operation {op}")


def serve():
    import torch  # noqa: F401  (imported once; every forked child inherits it)
    import fvcore.common.checkpoint  # noqa: F401
    import safetensors.torch  # noqa: F401

    print(json.dumps({"ready": True, "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            os.dup2(2, 1)  # anything a library prints must not reach the protocol
            try:
                result = run(request)
            except BaseException as e:  # reported to the driver, which fails loudly
                result = {"error": f"{type(e).__name__}: {e}"}
            with os.fdopen(write_end, "w") as out:
                out.write(json.dumps(result))
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as answer:
            text = answer.read()
        _, status = os.waitpid(pid, 0)
        if not text:
            text = json.dumps({"error": f"child died with status {status}"})
        print(text, flush=True)


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        sys.exit("usage: torch_contender.py serve   (driven by ckpt-bench)")
    serve()
