"""The interop matrix's cases: Python objects as torch users save them.

Each case is built deterministically (fixed seed) and saved in several variants (torch zip with
pickle protocol 2 and 4, the legacy pre-1.6 stream); the numpy cases are plain pickles as the
detectron2 model zoo ships them and as Python 2 wrote Detectron1 files. `matrix.py` runs every
variant through the `ckpt` CLI.
"""

import collections
import math
import pickle
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

import py2_pickle

# Every dtype torch can save, as torch names them.
DTYPES = [
    torch.float64, torch.float32, torch.float16, torch.bfloat16,
    torch.int64, torch.int32, torch.int16, torch.int8,
    torch.uint8, torch.uint16, torch.uint32, torch.uint64,
    torch.bool,
    torch.complex128, torch.complex64, torch.complex32,
    torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz,
]

# dtypes the pre-1.6 stream cannot hold: torch writes them but cannot read them back.
LEGACY_UNREADABLE = {
    torch.complex32, torch.uint16, torch.uint32, torch.uint64,
    torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz,
}


@dataclass
class Variant:
    """One way of writing a case to disk."""

    name: str
    save: Callable[[Any, str], None]
    # The `format` that `ckpt inspect --json` must report.
    format: str


def torch_variants():
    return [
        Variant("zip", lambda obj, path: torch.save(obj, path), "torch-zip"),
        Variant("zip-p4", lambda obj, path: torch.save(obj, path, pickle_protocol=4), "torch-zip"),
        Variant(
            "legacy",
            lambda obj, path: torch.save(obj, path, _use_new_zipfile_serialization=False),
            "torch-legacy",
        ),
    ]


def pickle_variants():
    def dump(protocol):
        def save(obj, path):
            with open(path, "wb") as f:
                pickle.dump(obj, f, protocol=protocol)

        return save

    return [Variant("pkl-p2", dump(2), "pickle"), Variant("pkl-p4", dump(4), "pickle")]


def py2_variants():
    def save(obj, path):
        with open(path, "wb") as f:
            f.write(py2_pickle.dumps(obj))

    return [Variant("py2", save, "pickle")]


@dataclass
class Case:
    """A value to save, and the value `torch.load` must return for ckpt's output of it."""

    name: str
    value: Any
    variants: list
    # What torch must load from `ckpt convert`'s output; `value` itself when None.
    expected: Any = None
    # Why a variant cannot be tested (torch itself cannot round-trip it), by variant name.
    skip: dict = None
    # torch's own round trip fails this case: `--self-test` skips it.
    reference_fails: bool = False
    # A one-line refusal by `ckpt convert` is acceptable (a rare kind of tensor: refusing it is
    # safe, converting it wrongly is not).
    refusal_ok: bool = False

    def expected_value(self):
        return self.value if self.expected is None else self.expected


def random_bits(dtype, shape):
    """A tensor whose bytes are random: every bit pattern, NaN payloads included."""
    itemsize = dtype.itemsize
    numel = math.prod(shape)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, dtype=torch.uint8).to(torch.bool)
    raw = torch.randint(0, 256, (numel * itemsize,), dtype=torch.uint8)
    return raw.view(dtype).reshape(shape)


def special_values(dtype):
    """Edge values of a dtype: extremes for ints, signed zeros and non-finite values for floats."""
    if dtype == torch.bool:
        return torch.tensor([True, False, True])
    if dtype.is_complex:
        if dtype == torch.complex32:
            return random_bits(dtype, (4,))
        real = torch.tensor([0.0, -0.0, math.inf, math.nan, 1.5], dtype=torch.float64)
        imag = torch.tensor([-0.0, math.nan, -math.inf, 2.0, -1e-300], dtype=torch.float64)
        return torch.complex(real, imag).to(dtype)
    if dtype.is_floating_point:
        if dtype.itemsize == 1:  # float8: every representable byte
            return torch.arange(256, dtype=torch.int32).to(torch.uint8).view(dtype)
        info = torch.finfo(dtype)
        values = [0.0, -0.0, 1.0, -2.5, math.inf, -math.inf, math.nan, info.max, info.min, info.tiny]
        return torch.tensor(values, dtype=torch.float64).to(dtype)
    if dtype in (torch.uint16, torch.uint32, torch.uint64):
        # Build from signed bit patterns: all-ones is the unsigned maximum.
        signed = {torch.uint16: torch.int16, torch.uint32: torch.int32, torch.uint64: torch.int64}[dtype]
        return torch.tensor([0, 1, -1, 2], dtype=signed).view(dtype)
    info = torch.iinfo(dtype)
    return torch.tensor([0, 1, -1 if info.min < 0 else 2, info.min, info.max], dtype=dtype)


def dtype_case(dtype):
    name = str(dtype).removeprefix("torch.")
    value = {
        "special": special_values(dtype),
        "matrix": random_bits(dtype, (3, 4)),
        "scalar": random_bits(dtype, ()),
        "empty": random_bits(dtype, (0, 2)),
    }
    skip = {"legacy": "torch cannot read this dtype from its legacy format"} if dtype in LEGACY_UNREADABLE else {}
    return Case(f"dtype_{name}", value, torch_variants(), skip=skip)


def shapes_case():
    return Case(
        "shapes",
        {
            "scalar_0d": torch.tensor(3.25),
            "empty_1d": torch.zeros(0),
            "empty_0x3": torch.zeros(0, 3),
            "empty_middle": torch.zeros(2, 0, 4),
            "one": torch.ones(1),
            "4d": torch.randn(2, 3, 4, 5),
            "5d": torch.randn(1, 2, 1, 3, 2),
            "long_1d": torch.randn(10_000),
        },
        torch_variants(),
    )


def views_case():
    base = torch.arange(24, dtype=torch.float32)
    grid = base.view(4, 6)
    return Case(
        "views_and_shared_storage",
        {
            "base": base,
            "slice": base[2:8],
            "slice_as_2d": base[2:8].view(2, 3),
            "transposed": grid.t(),
            "column_block": grid[:, 1:3],
            "every_third": base[::3],
            "last": base[-1],
            "expanded": torch.tensor([1.0, 2.0]).expand(3, 2),
            "unshared": torch.arange(5, dtype=torch.int64),
            "permuted_4d": torch.randn(2, 3, 4, 5).permute(3, 1, 0, 2),
        },
        torch_variants(),
    )


def same_tensor_twice_case():
    t = torch.randn(3, 2)
    return Case("same_tensor_twice", {"a": t, "b": t, "in_list": [t, t.t()], "in_tuple": (t,)}, torch_variants())


class TiedLM(nn.Module):
    """An embedding and an output projection sharing one weight, as language models do."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.head = nn.Linear(4, 7, bias=False)
        self.head.weight = self.embed.weight


def small_net():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))
    net.train()
    net(torch.randn(8, 4))  # updates the BatchNorm running statistics
    return net


def trained(optimizer_cls, **kwargs):
    net = small_net()
    opt = optimizer_cls(net.parameters(), **kwargs)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 4)).square().mean().backward()
        opt.step()
    return net, opt


def module_cases():
    net = small_net()
    return [
        Case("module_state_dict", net.state_dict(), torch_variants()),
        Case("module_state_dict_keep_vars", net.state_dict(keep_vars=True), torch_variants()),
        Case("tied_weights_state_dict", TiedLM().state_dict(), torch_variants()),
        Case(
            "parameters",
            {
                "param": nn.Parameter(torch.randn(2, 2)),
                "frozen_param": nn.Parameter(torch.randn(3), requires_grad=False),
                "leaf_requiring_grad": torch.randn(2, requires_grad=True),
            },
            torch_variants(),
        ),
    ]


def optimizer_cases():
    cases = []
    for name, cls, kwargs in [
        ("sgd_momentum", torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
        ("adam", torch.optim.Adam, dict(lr=1e-3)),
        ("adamw", torch.optim.AdamW, dict(lr=1e-3, weight_decay=0.01)),
    ]:
        _, opt = trained(cls, **kwargs)
        cases.append(Case(f"optimizer_{name}", opt.state_dict(), torch_variants()))
    return cases


def scheduler_cases():
    _, opt = trained(torch.optim.SGD, lr=0.1, momentum=0.9)
    multistep = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 5], gamma=0.5)
    _, opt2 = trained(torch.optim.SGD, lr=0.1, momentum=0.9)
    onecycle = torch.optim.lr_scheduler.OneCycleLR(opt2, max_lr=1.0, total_steps=20)
    for sched, o in ((multistep, opt), (onecycle, opt2)):
        for _ in range(3):
            o.step()
            sched.step()
    return [
        Case("scheduler_multistep", multistep.state_dict(), torch_variants()),
        Case("scheduler_onecycle", onecycle.state_dict(), torch_variants()),
    ]


def trainer_checkpoint_cases():
    net, opt = trained(torch.optim.SGD, lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 5])
    detectron2 = {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "iteration": 99,
    }
    pycls = {
        "epoch": 3,
        "model_state": net.state_dict(),
        "optimizer_state": opt.state_dict(),
        "cfg": "MODEL:\n  TYPE: anynet\nOPTIM:\n  BASE_LR: 0.1\n",
    }
    return [
        Case("detectron2_checkpoint", detectron2, torch_variants()),
        Case("pycls_checkpoint", pycls, torch_variants()),
    ]


def python_value_cases():
    big = [
        0, 1, -1, 255, 256, 65535, 65536, 2**31 - 1, -(2**31), 2**31, -(2**31) - 1,
        2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64 - 1, 2**64, 2**70, -(2**70), 2**200, -(2**200),
    ]
    floats = [
        0.0, -0.0, math.nan, -math.nan, math.inf, -math.inf, 5e-324, 2.2250738585072014e-308,
        1.7976931348623157e308, 0.1, 1 / 3, -1e100,
    ]
    strings = {
        "ascii": "hello",
        "unicode": "ünïcødé 日本語 🤖",
        "": "the empty key",
        "ключ": "значение",
        "with\nnewline and \x00 nul": "x\x00y\n",
        "long": "ab" * 700,
        "dots.in.key": "a.b",
    }
    byte_values = {
        "all_bytes": bytes(range(256)),
        "bytearray": bytearray(b"\x00\xff\x80"),
        "nested": [b"a", (b"\xc3\xa9",)],
    }
    containers = {
        "none": None,
        "bools": [True, False],
        "int_vs_float_vs_bool": [1, 1.0, True, 0, 0.0, False],
        "tuples": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), ((1,), [2], {"k": (3,)})],
        "lists": [[], [[]], [1, [2, [3, [4]]]]],
        "sets": [set(), {1, 2, 3}, {"a", "b"}, {(1, 2), None}],
        "complex": [complex(1.5, -2.0), complex(math.nan, -0.0)],
        "ordered": collections.OrderedDict([("z", 1), ("a", 2)]),
        "counter": collections.Counter({"x": 3, "y": 1}),
        "big_list": list(range(1500)),
        "big_dict": {f"k{i}": i for i in range(1500)},
    }
    keys = {0: "zero", -5: "negative", 2**70: "big", (1, "x"): "tuple", None: "none", 1.5: "float", "s": "str"}
    torch_values = {
        "size": torch.Size([2, 3]),
        "empty_size": torch.Size([]),
        "cpu": torch.device("cpu"),
        "cuda_1": torch.device("cuda", 1),
        "cuda": torch.device("cuda"),
        "dtypes": list(DTYPES),
    }
    return [
        Case("ints_beyond_64_bits", big, torch_variants()),
        Case("floats_nan_inf_negative_zero", floats, torch_variants()),
        Case("non_ascii_strings_and_keys", strings, torch_variants()),
        Case("bytes", byte_values, torch_variants()),
        # torch writes b"" as a call of `bytes` that its own weights_only loader refuses; a
        # writer that spells it `_codecs.encode("", "latin1")` does better.
        Case("empty_bytes", {"empty": b"", "in_list": [b""]}, torch_variants(), reference_fails=True),
        Case("containers", containers, torch_variants()),
        Case("non_string_keys", keys, torch_variants()),
        Case("torch_size_device_dtype", torch_values, torch_variants()),
    ]


def lazy_view_cases():
    """Conjugate and negative views are saved with a metadata dict; losing it flips signs. ckpt
    resolves the bits on read: torch must load the same values from its output."""
    c = torch.randn(2, 3, dtype=torch.complex128)
    return [
        Case(
            "lazy_conj_and_neg_views",
            {
                "conj": torch.randn(3, dtype=torch.complex64).conj(),
                "conj128_transposed": c.t().conj(),
                "neg": torch.randn(3, dtype=torch.complex64).conj().imag,
                "neg_conj": torch._neg_view(torch.randn(2, dtype=torch.complex64).conj()),
            },
            torch_variants(),
        ),
        # Real tensors only, so that the safetensors output is checked too.
        Case(
            "lazy_neg_views_real",
            {
                "neg_imag": torch.randn(4, dtype=torch.complex64).conj().imag,
                "neg_int": torch._neg_view(torch.tensor([1, -2, 3])),
                "neg_half": torch._neg_view(torch.tensor([1.5, -0.0], dtype=torch.float16)),
            },
            torch_variants(),
        ),
    ]


def numpy_case():
    """A detectron2 model-zoo style pickle of numpy arrays; ckpt turns arrays into tensors."""
    rng = np.random.default_rng(0)
    model = {
        "conv1.weight": rng.standard_normal((4, 3, 2, 2)).astype(np.float32),
        "fc.weight_fortran": np.asfortranarray(rng.standard_normal((3, 5))),
        "fc.bias_big_endian": np.arange(5, dtype=">f4"),
        "bn.num_batches": np.array(7, dtype=np.int64),
        "mask": np.array([[1, 0], [255, 3]], dtype=np.uint8),
        "flags": np.array([True, False]),
        "half": np.array([1.5, -0.0, np.inf], dtype=np.float16),
        "scalar": np.float32(2.5),
    }
    value = {"model": model, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}

    return Case("numpy_model_zoo_pkl", value, pickle_variants(), expected=numpy_to_torch(value))


def detectron1_py2_case():
    """A Detectron1/Caffe2 pickle as Python 2 wrote it; Python 3 reads it with latin-1 strings."""
    rng = np.random.default_rng(1)
    blobs = {
        "conv1_w": rng.standard_normal((2, 3, 2, 2)).astype(np.float32),
        "conv1_b": np.zeros(2, dtype=np.float32),
        "fc1000_w_fortran": np.asfortranarray(rng.standard_normal((3, 5))),
        "res2_0_branch2a_bn_s_big_endian": np.arange(4, dtype=">f4"),
        "pred_b_long": rng.standard_normal(100).astype(np.float32),  # > 255 bytes: BINSTRING
        "lr_iter": np.array(7, dtype=np.int64),
        "mask_u8": np.array([[1, 0], [255, 3]], dtype=np.uint8),
        "caf\xe9_latin1_key": np.ones(2, dtype=np.float64),
    }
    value = {"blobs": blobs, "iter": 2**40, "lr": 0.01, "name": "R-50 caf\xe9", "scale": np.float32(1.5)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns about the numpy.core name Python 2 used
        loaded = pickle.loads(py2_pickle.dumps(value), encoding="latin1")
    return Case("detectron1_py2_pkl", value, py2_variants(), expected=numpy_to_torch(loaded))


def numpy_to_torch(obj):
    """What `ckpt convert` must make of numpy values: tensors of the same dtype, shape, values."""
    if isinstance(obj, (np.ndarray, np.generic)):
        a = np.asarray(obj)  # (np.ascontiguousarray would turn 0-d arrays into 1-d ones)
        return torch.from_numpy(np.array(a, dtype=a.dtype.newbyteorder("="), order="C", copy=True))
    if isinstance(obj, dict):
        return {k: numpy_to_torch(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(numpy_to_torch(v) for v in obj)
    return obj


def all_cases():
    """Every case, in a stable order."""
    torch.manual_seed(0)
    cases = [dtype_case(d) for d in DTYPES]
    cases += [shapes_case(), views_case(), same_tensor_twice_case()]
    cases += module_cases() + optimizer_cases() + scheduler_cases() + trainer_checkpoint_cases()
    cases += python_value_cases()
    cases += lazy_view_cases() + [numpy_case(), detectron1_py2_case()]
    for case in cases:
        case.skip = case.skip or {}
    return cases
