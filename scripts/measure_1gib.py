#!/usr/bin/env python3
"""Quick time and peak-memory measurement of ckpt beside torch.load on a ~1 GiB torch file.

    python scripts/measure_1gib.py --ckpt target/release/ckpt [--workdir DIR] [--repeat 3]

Makes a state dict of 320 float32 tensors (~1 GiB) with torch.save, then runs each command in its
own process: `ckpt inspect`, `ckpt convert in.pt out.pt`, `ckpt convert in.pt out.safetensors`,
and torch.load(weights_only=True) / torch.load(mmap=True) in a fresh python. Wall time is the
best of --repeat runs (the file is in the page cache: this measures the work, not the disk); peak
RSS is the largest resident set the process reached (from wait4; it includes the mapped pages of
the file it touched, and on Linux never reads below the size of this script's process, shown by
the /bin/true row); peak anon is the largest heap/anonymous memory, sampled every millisecond.
A bare `import torch` is measured too, as torch.load's floor.
This is a quick measurement, not a benchmark.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

TENSORS = 320
ROWS, COLS = 1024, 819  # 3.2 MiB each: 320 of them make ~1 GiB


MAKE_FILE = f"""
import sys, torch
torch.manual_seed(0)
torch.save({{f"layer{{i:03d}}.weight": torch.randn({ROWS}, {COLS}) for i in range({TENSORS})}}, sys.argv[1])
"""


def make_file(path):
    # In a child: this process stays small, because on Linux a child's peak RSS starts from the
    # size of the parent it was forked from.
    subprocess.run([sys.executable, "-c", MAKE_FILE, path], check=True)
    return os.path.getsize(path)


def anon_rss(pid):
    """The process's anonymous (heap) resident memory in bytes, or 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(argv):
    """(seconds, peak RSS, peak anonymous RSS) of one run of argv, which must succeed.

    Peak RSS (from wait4) counts the pages of memory-mapped files the process touched; the
    anonymous peak, sampled every millisecond, counts only memory it allocated.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_anon = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak_anon = max(peak_anon, anon_rss(proc.pid))
        time.sleep(0.001)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace").strip().splitlines()
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err[-1] if err else ''}")
    proc.stderr.close()
    return elapsed, usage.ru_maxrss * 1024, peak_anon  # ru_maxrss is in KiB on Linux


def best_of(argv, repeat):
    runs = [measure(argv) for _ in range(repeat)]
    return min(r[0] for r in runs), max(r[1] for r in runs), max(r[2] for r in runs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="the ckpt binary (a release build)")
    parser.add_argument("--workdir", help="where to write the ~3 GiB of files (default: a temporary directory)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="ckpt-1gib-", dir=args.workdir)
    try:
        src = os.path.join(tmp, "in.pt")
        size = make_file(src)
        print(f"file: {src}, {size / 2**30:.2f} GiB, {TENSORS} float32 tensors of {ROWS}x{COLS}")
        py = sys.executable
        load = "import torch, sys; sd = torch.load(sys.argv[1], weights_only=True{}); assert len(sd) == {}"
        commands = [
            ("/bin/true (floor: this script's own size)", ["/bin/true"]),
            ("ckpt inspect in.pt", [args.ckpt, "inspect", src]),
            ("ckpt inspect --json in.pt", [args.ckpt, "inspect", src, "--json"]),
            ("ckpt convert in.pt out.pt", [args.ckpt, "convert", src, os.path.join(tmp, "out.pt")]),
            ("ckpt convert in.pt out.safetensors", [args.ckpt, "convert", src, os.path.join(tmp, "out.safetensors")]),
            ("python: import torch (floor)", [py, "-c", "import torch"]),
            ("torch.load(weights_only=True)", [py, "-c", load.format("", TENSORS), src]),
            ("torch.load(weights_only=True, mmap=True)", [py, "-c", load.format(", mmap=True", TENSORS), src]),
        ]
        measure([py, "-c", f"open({src!r}, 'rb').read()"])  # warm the page cache
        print(f"\n{'command':<42} {'best time':>10} {'peak RSS':>10} {'peak anon':>10}")
        for label, argv in commands:
            seconds, rss, anon = best_of(argv, args.repeat)
            print(f"{label:<42} {seconds:>9.2f}s {rss / 2**20:>6.0f} MiB {anon / 2**20:>6.0f} MiB", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
