"""Strict comparison of what torch loads with what was saved.

`first_difference` is deliberately stricter than `==`: types must match exactly (dict vs
OrderedDict, tuple vs list, int vs float vs bool), key order must match, instance attributes such
as `state_dict()._metadata` must match, floats and tensors are compared bit for bit (so NaN equals
the same NaN and -0.0 differs from 0.0), but tensor strides are not compared.
"""

import math
import struct

import torch


def path_str(path):
    return "root" + "".join(f"[{p!r}]" for p in path)


def float_bits(x):
    return struct.pack("<d", x)


def tensor_bytes(t):
    """The tensor's values, in C order, as raw bytes (lazy conj/neg bits resolved)."""
    t = t.detach()
    if t.is_complex():
        t = t.resolve_conj()
    t = t.resolve_neg()
    return t.contiguous().reshape(-1).view(torch.uint8)


def tensor_difference(a, b, path):
    where = path_str(path)
    if a.dtype != b.dtype:
        return f"{where}: dtype {a.dtype} != {b.dtype}"
    if a.shape != b.shape:
        return f"{where}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    if a.requires_grad != b.requires_grad:
        return f"{where}: requires_grad {a.requires_grad} != {b.requires_grad}"
    if b.device.type != "cpu":
        return f"{where}: loaded on {b.device}, expected cpu"
    if not torch.equal(tensor_bytes(a), tensor_bytes(b)):
        return f"{where}: values differ ({summarize(a)} vs {summarize(b)})"
    return None


def summarize(t):
    flat = t.detach().reshape(-1)[:4]
    try:
        return str(flat.tolist())
    except (RuntimeError, TypeError):  # dtypes without Python scalars (float8, complex32)
        return str(tensor_bytes(flat).tolist())


def typed_key(k):
    """A key with its type, so that 1, 1.0 and True are told apart."""
    if isinstance(k, float) and math.isnan(k):
        return ("float", "nan")
    return (type(k).__name__, k)


def first_difference(expected, actual, path=()):
    """None if `actual` is `expected` as torch would have loaded it; else where they differ."""
    where = path_str(path)
    if type(expected) is not type(actual):
        return f"{where}: type {type(expected).__name__} != {type(actual).__name__}"
    if isinstance(expected, torch.Tensor):
        return tensor_difference(expected, actual, path)
    if isinstance(expected, dict):
        keys_e = [typed_key(k) for k in expected]
        keys_a = [typed_key(k) for k in actual]
        if keys_e != keys_a:
            return f"{where}: keys {keys_e[:8]} != {keys_a[:8]}"
        # Instance attributes, e.g. the `_metadata` of a `state_dict()` OrderedDict.
        attrs_e = dict(getattr(expected, "__dict__", {}))
        attrs_a = dict(getattr(actual, "__dict__", {}))
        if attrs_e or attrs_a:
            diff = first_difference(attrs_e, attrs_a, path + ("__dict__",))
            if diff:
                return diff
        for k in expected:
            diff = first_difference(expected[k], actual[k], path + (k,))
            if diff:
                return diff
        return None
    if isinstance(expected, (list, tuple)):  # torch.Size included
        if len(expected) != len(actual):
            return f"{where}: length {len(expected)} != {len(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            diff = first_difference(e, a, path + (i,))
            if diff:
                return diff
        return None
    if isinstance(expected, (set, frozenset)):
        set_e = sorted(repr(typed_key(k)) for k in expected)
        set_a = sorted(repr(typed_key(k)) for k in actual)
        return None if set_e == set_a else f"{where}: set {set_e} != {set_a}"
    if isinstance(expected, float):
        if float_bits(expected) != float_bits(actual):
            return f"{where}: float {expected!r} != {actual!r} (bitwise)"
        return None
    if isinstance(expected, complex):
        same = float_bits(expected.real) == float_bits(actual.real) and float_bits(expected.imag) == float_bits(
            actual.imag
        )
        return None if same else f"{where}: complex {expected!r} != {actual!r} (bitwise)"
    if expected != actual:
        return f"{where}: {shorten(expected)} != {shorten(actual)}"
    return None


def shorten(x):
    r = repr(x)
    return r if len(r) <= 60 else r[:57] + "..."


def tensors(obj, path=()):
    """Every tensor in an object tree with its path, in depth-first order."""
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from tensors(v, path + (k,))
    elif isinstance(obj, (list, tuple)) and not isinstance(obj, torch.Size):
        for i, v in enumerate(obj):
            yield from tensors(v, path + (i,))


def sharing_groups(obj):
    """Which tensors share a storage: a set of groups of paths (only groups of two or more).

    Tensors on empty storages are left out: torch gives them no address to compare.
    """
    by_storage = {}
    for path, t in tensors(obj):
        storage = t.untyped_storage()
        if storage.nbytes() == 0:
            continue
        by_storage.setdefault(storage.data_ptr(), []).append(path_str(path))
    return {frozenset(paths) for paths in by_storage.values() if len(paths) > 1}


def sharing_difference(expected, actual):
    groups_e, groups_a = sharing_groups(expected), sharing_groups(actual)
    if groups_e == groups_a:
        return None
    lost = [sorted(g) for g in groups_e - groups_a]
    extra = [sorted(g) for g in groups_a - groups_e]
    return f"storage sharing differs: expected groups {lost[:2]} but got {extra[:2]}"
