"""What torch's `dst.copy_(src)` gives for every pair of dtypes, on values chosen to exercise
rounding, truncation, wrapping, overflow, NaN and infinities.

Prints one JSON line: for every source dtype its raw little-endian bytes, and for every
destination dtype the bytes `copy_` wrote plus the indices whose result torch leaves to the
CPU and code path (a float that does not fit the integer type it is cast to: C++ undefined
behaviour, and torch's results differ between its own kernels there). Pairs torch warns
about (complex into a real type other than bool) are listed as refused.
"""

import json
import math
import warnings

import torch

DTYPES = [
    "float64", "float32", "float16", "bfloat16",
    "int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64", "bool",
    "complex128", "complex64", "complex32",
    "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
]
INTS = {"int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64"}
COMPLEX = {"complex128", "complex64", "complex32"}

FLOATS = [
    0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1.5, -1.5, 2.5, 2.7, -2.7, 100.25, -100.75, 127.0,
    -128.0, 200.5, -200.5, 255.0, 256.0, 300.0, 1000.5, 65504.0, 70000.0, -70000.0, 1e5,
    3e9, -3e9, 1.8e19, 1e-3, 1e-8, -1e-8, 1e-40, 448.0, 464.0, 470.0, 480.0, 240.0, 250.0,
    57344.0, 61440.0, 0.0009765625, 0.001953125, 2.0**-10, 2.0**-17,
    # Rounded twice by torch (to float32, then to 16 bits): these tell the two apart.
    1.0 + 2.0**-11 + 2.0**-40, 1.0 + 2.0**-8 + 2.0**-40, 1.0 + 2.0**-24 + 2.0**-60,
    math.inf, -math.inf, math.nan,
]
INT_VALUES = [
    0, 1, -1, 2, 127, -128, 128, 255, 256, -129, 1000, 32767, -32768, 65535, 65536, 65519,
    65520, 2**24 + 1, 2**24 + 2**16 + 1, 2**31 - 1, -(2**31), 2**32 + 5, 2**53 + 1,
    2**62 + 2**38 + 1, 2**63 - 1, -(2**63), 448, 480, 57344,
]
COMPLEX_VALUES = [
    0j, 1 + 0j, -1.5 + 2.5j, 0 + 1j, 1e-40 + 0j, 65504 + 70000j, complex(math.nan, 0),
    complex(0, math.inf), 1.0 + 2.0**-11 + 2.0**-40 + 3j, 0.0 - 0.0j,
]


def source(name):
    dtype = getattr(torch, name)
    if name == "bool":
        return torch.tensor([False, True, True, False])
    if name in INTS:
        return torch.tensor(INT_VALUES, dtype=torch.int64).to(dtype)
    if name in COMPLEX:
        return torch.tensor(COMPLEX_VALUES, dtype=torch.complex128).to(dtype)
    return torch.tensor(FLOATS, dtype=torch.float64).to(dtype)


def raw(t):
    return bytes(t.contiguous().untyped_storage()).hex()


def undefined(src, dst_name):
    """Indices where C++ leaves a float-to-integer conversion undefined."""
    if dst_name not in INTS or src.dtype.is_complex or not src.dtype.is_floating_point:
        return []
    low, high = {
        "int64": (-(2.0**63), 2.0**63),
        "uint64": (-(2.0**63), 2.0**64),
    }.get(dst_name, (-(2.0**31), 2.0**31))
    out = []
    for i, v in enumerate(src.double().tolist()):
        if math.isnan(v) or math.isinf(v) or not (low <= math.trunc(v) < high):
            out.append(i)
    return out


def main():
    warnings.simplefilter("ignore")
    result = {}
    for s in DTYPES:
        src = source(s)
        entry = {"n": src.numel(), "bytes": raw(src), "dst": {}, "refused": []}
        for d in DTYPES:
            if s in COMPLEX and d not in COMPLEX and d != "bool":
                # torch warns "Casting complex values to real discards the imaginary part".
                entry["refused"].append(d)
                continue
            dst = torch.empty(src.numel(), dtype=getattr(torch, d))
            dst.copy_(src)
            entry["dst"][d] = {"bytes": raw(dst), "undefined": undefined(src, d)}
        result[s] = entry
    print(json.dumps(result))


if __name__ == "__main__":
    main()
