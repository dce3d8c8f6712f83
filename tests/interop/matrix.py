#!/usr/bin/env python3
"""Live interop matrix: torch -> ckpt -> torch, through the `ckpt` command line.

For every case of `cases.py` and every variant (torch zip with pickle protocol 2 and 4, the legacy
format, plain numpy pickles) this script

1. writes the case with torch (or pickle),
2. runs `ckpt convert case out.pt` and loads `out.pt` with `torch.load(weights_only=True)`, with
   Python warnings turned into errors, with and without `mmap=True`, and compares it strictly with
   the original (types, key order, `_metadata`, bitwise tensor values, storage sharing),
3. runs `ckpt convert out.pt again.pt` (ckpt reading its own output) and compares again,
4. checks that `ckpt inspect --json case` lists every tensor with torch's path, type, dtype and shape,
5. runs `ckpt convert case out.safetensors --tensors-only` and compares what the `safetensors`
   package loads (a dtype safetensors cannot hold may instead be refused with a one-line error).

It prints `PASS name`, `FAIL name: reason` or `SKIP name: reason` per case and variant, then
`N passed, M failed, K skipped`, and exits 1 if anything failed.

    python tests/interop/matrix.py --ckpt target/debug/ckpt --workdir /tmp/matrix
    python tests/interop/matrix.py --self-test        # checks the matrix itself, see reference_cli.py
"""

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from cases import all_cases  # noqa: E402
from compare import first_difference, path_str, sharing_difference, tensors  # noqa: E402

# A single CLI call never takes this long on the matrix's small files; a hang is a failure.
TIMEOUT_SECONDS = 120

# dtypes the safetensors format, as the `safetensors` Rust crate knows it, cannot hold (the Python
# package also knows C64 and the fnuz float8 types).
NOT_IN_SAFETENSORS = {
    torch.complex128, torch.complex64, torch.complex32, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz,
}


class CaseFailure(Exception):
    pass


class Cli:
    """Runs the `ckpt` command and turns its misbehaviour into readable failures."""

    def __init__(self, command):
        self.command = command

    def run(self, *args):
        return self.spawn(*args)

    def spawn(self, *args):
        try:
            proc = subprocess.run(
                self.command + list(args), capture_output=True, text=True, timeout=TIMEOUT_SECONDS
            )
        except subprocess.TimeoutExpired:
            raise CaseFailure(f"`ckpt {' '.join(args)}` did not finish within {TIMEOUT_SECONDS}s")
        return proc

    def ok(self, *args):
        proc = self.run(*args)
        if proc.returncode != 0:
            raise CaseFailure(f"`ckpt {args[0]}` exited {proc.returncode}: {last_line(proc.stderr)}")
        return proc

    def convert(self, source, target, *flags):
        proc = self.ok("convert", source, target, *flags)
        if not os.path.exists(target):
            raise CaseFailure(f"`ckpt convert` exited 0 but wrote no {os.path.basename(target)}")
        return proc


class InProcessReference(Cli):
    """reference_cli.py called in this process (importing torch per call would take minutes)."""

    def __init__(self):
        import reference_cli

        super().__init__(["reference_cli.py"])
        self.main = reference_cli.main

    def run(self, *args):
        stdout = io.StringIO()
        code, stderr = 0, ""
        try:
            with contextlib.redirect_stdout(stdout), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="ComplexHalf support is experimental")
                self.main(list(args))
        except SystemExit as e:
            code, stderr = (1, str(e.code)) if isinstance(e.code, str) else (e.code or 0, "")
        return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr)


def last_line(text):
    """The line of stderr that says what went wrong (for a panic, its message and location)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "panicked at" in line:
            message = lines[i + 1] if i + 1 < len(lines) else ""
            return f"PANIC {message} ({line})"
    return lines[-1] if lines else "(no message)"


def strict_load(path, mmap):
    """torch.load as a careful user does it: weights only, every warning an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # torch warns whenever it creates a complex32 tensor, from any file, its own included.
        warnings.filterwarnings("ignore", message="ComplexHalf support is experimental")
        try:
            return torch.load(path, weights_only=True, mmap=mmap)
        except Exception as e:  # noqa: BLE001 - any refusal by torch is the finding
            mode = " mmap=True" if mmap else ""
            raise CaseFailure(f"torch.load(weights_only=True{mode}) refused ckpt's output: {one_line(e)}")


def one_line(error):
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."


def check_same(expected, actual, what):
    diff = first_difference(expected, actual)
    if diff:
        raise CaseFailure(f"{what}: {diff}")
    diff = sharing_difference(expected, actual)
    if diff:
        raise CaseFailure(f"{what}: {diff}")


def json_path(path):
    """The path as `ckpt inspect --json` spells it, or None if a key is neither str nor int."""
    out = []
    for p in path:
        if isinstance(p, bool) or not isinstance(p, (str, int)):
            return None
        out.append(p)
    return tuple(out)


def tensor_type(t):
    return "Parameter" if isinstance(t, torch.nn.Parameter) else "Tensor"


def check_inspect(cli, case_file, original, variant):
    proc = cli.ok("inspect", case_file, "--json")
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        raise CaseFailure(f"inspect --json printed invalid JSON: {e}")
    if report.get("format") != variant.format:
        raise CaseFailure(f"inspect: format {report.get('format')!r}, expected {variant.format!r}")
    entries = report.get("entries", [])
    listed = {}
    for entry in entries:
        if entry.get("kind") == "tensor":
            listed[tuple(entry.get("path", []))] = entry
    opaque = [e.get("path") for e in entries if e.get("opaque")]
    if opaque:
        raise CaseFailure(f"inspect: values marked opaque in a file of known types: {opaque[:3]}")
    found = list(tensors(original))
    if len(listed) != len(found):
        raise CaseFailure(f"inspect: {len(listed)} tensors listed, torch has {len(found)}")
    for path, t in found:
        key = json_path(path)
        if key is None:
            continue
        entry = listed.get(key)
        if entry is None:
            raise CaseFailure(f"inspect: no tensor entry for path {list(key)}")
        want_type = variant_tensor_type(variant, t)
        want = (want_type, str(t.dtype).removeprefix("torch."), list(t.shape))
        got = (entry.get("type"), entry.get("dtype"), entry.get("shape"))
        if got != want:
            raise CaseFailure(f"inspect: {list(key)} is {got}, torch says {want}")
        if "bytes" in entry and entry["bytes"] != t.numel() * t.element_size():
            raise CaseFailure(f"inspect: {list(key)} has {entry['bytes']} bytes, expected {t.numel() * t.element_size()}")


def variant_tensor_type(variant, t):
    return "numpy.ndarray" if variant.format == "pickle" else tensor_type(t)


def check_safetensors(cli, case_file, expected, workdir, stem):
    out = os.path.join(workdir, stem + ".safetensors")
    found = list(tensors(expected))
    if not found:
        return
    unsupported = sorted({str(t.dtype) for _, t in found if t.dtype in NOT_IN_SAFETENSORS})
    proc = cli.run("convert", case_file, out, "--tensors-only")
    if unsupported and proc.returncode == 1:
        if len(proc.stderr.strip().splitlines()) != 1:
            raise CaseFailure(f"safetensors refusal of {unsupported} is not a one-line error: {proc.stderr!r}")
        return
    if proc.returncode != 0:
        raise CaseFailure(f"`ckpt convert --tensors-only` to safetensors exited {proc.returncode}: {last_line(proc.stderr)}")
    try:
        loaded = load_file(out)
    except Exception as e:  # noqa: BLE001
        raise CaseFailure(f"safetensors could not load ckpt's output: {one_line(e)}")
    want = {".".join(str(p) for p in path): t for path, t in found if t.dtype not in NOT_IN_SAFETENSORS}
    missing = sorted(set(want) - set(loaded))
    extra = sorted(set(loaded) - {".".join(str(p) for p in path) for path, _ in found})
    if missing or extra:
        raise CaseFailure(f"safetensors keys: missing {missing[:4]}, unexpected {extra[:4]}")
    for name, t in want.items():
        diff = first_difference(t.detach().clone(), loaded[name], (name,))
        if diff:
            raise CaseFailure(f"safetensors: {diff}")


def run_variant(cli, case, variant, workdir):
    stem = f"{case.name}.{variant.name}"
    case_file = os.path.join(workdir, stem + (".pkl" if variant.format == "pickle" else ".pt"))
    variant.save(case.value, case_file)
    expected = case.expected_value()

    out = os.path.join(workdir, stem + ".out.pt")
    if case.refusal_ok:
        proc = cli.run("convert", case_file, out)
        if proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1:
            return f"refused: {proc.stderr.strip()}"
    cli.convert(case_file, out)
    check_same(expected, strict_load(out, mmap=False), "torch.load of ckpt's output")
    check_same(expected, strict_load(out, mmap=True), "torch.load(mmap=True) of ckpt's output")

    again = os.path.join(workdir, stem + ".again.pt")
    cli.convert(out, again)
    check_same(expected, strict_load(again, mmap=False), "torch.load of ckpt's output converted again")

    check_inspect(cli, case_file, expected if variant.format == "pickle" else case.value, variant)
    check_safetensors(cli, case_file, expected, workdir, stem)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", help="path of the ckpt binary")
    parser.add_argument("--self-test", action="store_true", help="run against reference_cli.py (torch-based)")
    parser.add_argument("--workdir", help="where to write the files (default: a temporary directory)")
    parser.add_argument("--only", help="run only cases whose name contains this text")
    args = parser.parse_args()
    if args.self_test:
        cli = InProcessReference()
    elif args.ckpt:
        cli = Cli([args.ckpt])
    else:
        parser.error("give --ckpt PATH or --self-test")

    with tempfile.TemporaryDirectory(prefix="ckpt-interop-") as tmp:
        workdir = args.workdir or tmp
        os.makedirs(workdir, exist_ok=True)
        return run_all(cli, workdir, args.only, args.self_test)


def run_all(cli, workdir, only, self_test):
    print(f"interop matrix: torch {torch.__version__}, ckpt command {' '.join(cli.command)}", flush=True)
    passed = failed = skipped = 0
    for case in all_cases():
        if only and only not in case.name:
            continue
        for variant in case.variants:
            name = f"{case.name}[{variant.name}]"
            reason = case.skip.get(variant.name)
            if self_test and case.reference_fails:
                reason = "torch's own round trip fails this case"
            if reason:
                print(f"SKIP {name}: {reason}", flush=True)
                skipped += 1
                continue
            try:
                note = run_variant(cli, case, variant, workdir)
            except CaseFailure as e:
                print(f"FAIL {name}: {e}", flush=True)
                failed += 1
            except Exception as e:  # noqa: BLE001 - a harness error fails the case, loudly
                print(f"FAIL {name}: harness error {one_line(e)}", flush=True)
                traceback.print_exc(limit=3)
                failed += 1
            else:
                print(f"PASS {name}" + (f" ({note})" if note else ""), flush=True)
                passed += 1
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
