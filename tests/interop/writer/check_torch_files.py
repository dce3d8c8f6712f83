"""Checks the torch files ckpt's writer produced (crates/ckpt/tests/it/write_torch_loads_in_torch.rs).

Usage: python check_torch_files.py DIR

Every DIR/<case>.pt is loaded with torch.load(weights_only=True) (warnings are errors) three
ways: plain read, mmap=True, and mmap=True with calculate_storage_offsets (which trusts the
exact miniz layout). Each result is compared with an expectation built here, independently
of the Rust side: exact types, dict order, values (floats by bits), tensor dtype, shape,
strides, storage offset, bytes, requires_grad, and which tensors share a storage.
Prints ALL OK on success; exits 1 with a list of differences otherwise.
"""
import math
import struct
import sys
import warnings
import zipfile
from collections import Counter, OrderedDict
from pathlib import Path

import torch
import torch.utils.serialization.config

warnings.simplefilter("error")
# torch warns (once per process) whenever it creates a complex32 tensor, also when loading a
# file torch.save wrote itself: not a property of the file.
warnings.filterwarnings("ignore", message="ComplexHalf support is experimental")

ALL_DTYPES = [
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.uint16, torch.uint32, torch.uint64, torch.bool,
    torch.complex128, torch.complex64, torch.complex32, torch.float8_e4m3fn, torch.float8_e5m2,
    torch.float8_e4m3fnuz, torch.float8_e5m2fnuz,
]


def dtype_name(dtype):
    return str(dtype).removeprefix("torch.")


def pattern(dtype, shape):
    n = math.prod(shape) * dtype.itemsize
    if dtype == torch.bool:
        data = bytes(i % 2 for i in range(n))
    else:
        data = bytes((i * 37 + 11) % 256 for i in range(n))
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype).reshape(shape)


def arange(n, shape):
    return torch.arange(n, dtype=torch.float32).reshape(shape)


def dtypes_case():
    return OrderedDict((dtype_name(d), pattern(d, (2, 3))) for d in ALL_DTYPES), []


def shapes_case():
    return OrderedDict(
        scalar=torch.tensor(3.5),
        empty=torch.zeros(0, 3),
        empty_mid=torch.zeros(2, 0, 4, dtype=torch.int64),
        four_d=arange(120, (2, 3, 4, 5)),
        long_scalar=torch.tensor(7),
    ), []


def views_case():
    base = arange(12, (12,))
    as_int = base.clone()[:4].view(torch.int32)
    value = OrderedDict(
        base=base,
        view=base[2:8].view(2, 3),
        transposed=base.view(3, 4).t(),
        expanded=base[:4].expand(3, 4),
        tied=base,
        as_int=as_int,
        other=arange(3, (3,)),
    )
    sharing = [
        ("share", ["base", "view", "transposed", "expanded", "tied"]),
        ("alone", ["base", "as_int"]),
        ("alone", ["base", "other"]),
    ]
    return value, sharing


def metadata(entries):
    return OrderedDict((prefix, {"version": v}) for prefix, v in entries)


def module_case():
    sd = OrderedDict()
    sd["0.weight"] = arange(6, (2, 3))
    sd["0.bias"] = torch.tensor([0.5, -0.5])
    sd["1.weight"] = torch.tensor([1.0, 1.0])
    sd["1.bias"] = torch.tensor([0.0, 0.0])
    sd["1.running_mean"] = torch.tensor([0.0, 0.0])
    sd["1.running_var"] = torch.tensor([1.0, 1.0])
    sd["1.num_batches_tracked"] = torch.tensor(0)
    sd._metadata = metadata([("", 1), ("0", 1), ("1", 2)])
    return sd, []


def adam_case():
    def state(i):
        return {"step": torch.tensor(1.0), "exp_avg": arange(6 + i, (6 + i,)),
                "exp_avg_sq": arange(6 + i, (6 + i,))}
    group = {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-08, "weight_decay": 0,
             "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
             "differentiable": False, "fused": None, "decoupled_weight_decay": False,
             "params": [0, 1]}
    return {"state": {0: state(0), 1: state(1)}, "param_groups": [group]}, []


def sgd_case():
    group = {"lr": 0.1, "momentum": 0.9, "dampening": 0, "weight_decay": 1e-4,
             "nesterov": False, "maximize": False, "foreach": None, "differentiable": False,
             "fused": None, "params": [0]}
    return {"state": {0: {"momentum_buffer": arange(4, (2, 2))}}, "param_groups": [group]}, []


def scalars_case():
    keys = {-5: "int", 2.5: "float", None: "none", (1, "a"): "tuple", b"k": "bytes",
            torch.float32: "dtype", "s": "str"}
    value = {
        "big": 2**70, "neg_big": -(2**70), "i64max": 2**63 - 1, "i64min": -(2**63),
        "minus_one": -1, "b255": 255, "b256": 256, "b65536": 65536, "i32min": -(2**31),
        "nan": float("nan"), "inf": float("inf"), "ninf": float("-inf"), "negzero": -0.0,
        "text": "héllo wörld ✓ 日本", "empty_text": "", "bytes": b"\x00\xff abc\x80",
        "empty_bytes": b"", "bytearray": bytearray(b"\x01\x02\xff"),
        "tuple": (1, "a", None, 2.5), "tuple1": (1,), "empty_tuple": (), "empty_list": [],
        "empty_dict": {}, "none": None, "set": {1, 2, 3}, "size": torch.Size([2, 3]),
        "empty_size": torch.Size([]), "device": torch.device("cuda", 1),
        "device_cpu": torch.device("cpu"), "dtype": torch.float16,
        "dtype_new": torch.float8_e4m3fn, "complex": complex(1.5, -2.0), "true": True,
        "false": False, "nested": [[1, [2, [3]]], {"a": {"b": {}}}],
        "counter": Counter({"x": 2, "y": 1}), "keys": keys, "empty_ordered": OrderedDict(),
    }
    return value, []


def parameters_case():
    value = {
        "p": torch.nn.Parameter(arange(4, (2, 2)), requires_grad=True),
        "p_frozen": torch.nn.Parameter(arange(3, (3,)), requires_grad=False),
        "t_grad": arange(2, (2,)).requires_grad_(True),
        "ndarray": torch.tensor([1.0, 2.0], dtype=torch.float64),
        "int_grad_ignored": torch.tensor([1]),
    }
    return value, []


def many_case():
    d = OrderedDict()
    for i in range(1001):
        d[f"layer{i}.weight"] = torch.tensor([float(i), -float(i)])
    d["names"] = [f"n{i}" for i in range(1001)]
    return d, []


CASES = {
    "dtypes": dtypes_case,
    "shapes": shapes_case,
    "views": views_case,
    "module": module_case,
    "adam": adam_case,
    "sgd": sgd_case,
    "scalars": scalars_case,
    "parameters": parameters_case,
    "many": many_case,
    "align4096": module_case,
    "nocrc": views_case,
    "named": shapes_case,
}


def raw(t):
    t = t.detach().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def compare(actual, expected, path, errors):
    if type(actual) is not type(expected):
        errors.append(f"{path}: type {type(actual).__name__}, expected {type(expected).__name__}")
        return
    if isinstance(expected, torch.Tensor):
        for attr in ("dtype", "shape", "requires_grad"):
            if getattr(actual, attr) != getattr(expected, attr):
                errors.append(f"{path}: {attr} {getattr(actual, attr)} != {getattr(expected, attr)}")
                return
        if actual.numel() and (actual.stride() != expected.stride()
                               or actual.storage_offset() != expected.storage_offset()):
            errors.append(f"{path}: stride/offset {actual.stride()}/{actual.storage_offset()}"
                          f" != {expected.stride()}/{expected.storage_offset()}")
        if raw(actual) != raw(expected):
            errors.append(f"{path}: tensor data differs: {actual} != {expected}")
        return
    if isinstance(expected, float):
        if struct.pack("<d", actual) != struct.pack("<d", expected):
            errors.append(f"{path}: {actual!r} != {expected!r}")
        return
    if isinstance(expected, complex):
        compare(actual.real, expected.real, path + ".real", errors)
        compare(actual.imag, expected.imag, path + ".imag", errors)
        return
    if isinstance(expected, dict):
        if list(actual.keys()) != list(expected.keys()):
            errors.append(f"{path}: keys {list(actual.keys())!r} != {list(expected.keys())!r}")
            return
        for k in expected:
            compare(actual[k], expected[k], f"{path}[{k!r}]", errors)
        a_meta = getattr(actual, "_metadata", None)
        e_meta = getattr(expected, "_metadata", None)
        if e_meta is not None or a_meta is not None:
            if e_meta is None or a_meta is None:
                errors.append(f"{path}._metadata: {a_meta!r} != {e_meta!r}")
            else:
                compare(a_meta, e_meta, path + "._metadata", errors)
        return
    if isinstance(expected, (list, tuple)):
        if len(actual) != len(expected):
            errors.append(f"{path}: length {len(actual)} != {len(expected)}")
            return
        for i, (a, e) in enumerate(zip(actual, expected)):
            compare(a, e, f"{path}[{i}]", errors)
        if isinstance(expected, torch.Size) and actual != expected:
            errors.append(f"{path}: {actual} != {expected}")
        return
    if isinstance(expected, int) and not isinstance(expected, bool):
        if actual != expected:
            errors.append(f"{path}: {actual} != {expected}")
        return
    if actual != expected:
        errors.append(f"{path}: {actual!r} != {expected!r}")


def check_sharing(value, sharing, errors, mode):
    ptr = lambda key: value[key].untyped_storage().data_ptr()
    for kind, keys in sharing:
        ptrs = [ptr(k) for k in keys]
        if kind == "share" and len(set(ptrs)) != 1:
            errors.append(f"{mode}: {keys} should share one storage")
        if kind == "alone" and len(set(ptrs)) != len(ptrs):
            errors.append(f"{mode}: {keys} should not share a storage")


def main():
    directory = Path(sys.argv[1])
    errors = []
    found = sorted(p.stem for p in directory.glob("*.pt"))
    if found != sorted(CASES):
        errors.append(f"cases written {found} != cases checked {sorted(CASES)}")
    for name, make in CASES.items():
        path = directory / f"{name}.pt"
        if not path.exists():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. complex32 ops are "experimental"
            expected, sharing = make()
        if name != "nocrc":
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
                if bad is not None:
                    errors.append(f"{name}: bad CRC in {bad}")
        for mode in ("read", "mmap", "mmap+calculate_storage_offsets"):
            torch.utils.serialization.config.load.calculate_storage_offsets = mode.endswith("offsets")
            try:
                actual = torch.load(path, weights_only=True, mmap=(mode != "read"))
            except Exception as e:  # noqa: BLE001 - report every failure
                errors.append(f"{name} ({mode}): {type(e).__name__}: {e}")
                continue
            before = len(errors)
            compare(actual, expected, f"{name}({mode})", errors)
            check_sharing(actual, sharing, errors, f"{name}({mode})")
            if len(errors) > before + 20:
                del errors[before + 20:]
        torch.utils.serialization.config.load.calculate_storage_offsets = False
    if errors:
        print("\n".join(errors))
        sys.exit(1)
    print("ALL OK")


if __name__ == "__main__":
    main()
