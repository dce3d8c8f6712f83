"""Emits pickles as Python 2's cPickle wrote Detectron1/Caffe2 `.pkl` files (docs/formats.md#numpy).

Python 3 cannot write these: Python 2 `str` keys and array data are SHORT_BINSTRING/BINSTRING
byte strings, ints may use the text INT opcode, and numpy arrays are `numpy.core.multiarray
_reconstruct` calls with a BUILD state holding the raw bytes (Fortran order and big-endian dtypes
included). `dumps` supports the types those files hold: dict, list, tuple, str (as a Python 2
byte string, latin-1), int, float, bool, None and numpy arrays/scalars.
"""

import struct

import numpy as np

PROTO, STOP, MARK = b"\x80\x02", b".", b"("
EMPTY_DICT, EMPTY_LIST, SETITEMS, APPENDS, BUILD, REDUCE = b"}", b"]", b"u", b"e", b"b", b"R"
TUPLE, TUPLE1, TUPLE3, NONE, NEWTRUE, NEWFALSE = b"t", b"\x85", b"\x87", b"N", b"\x88", b"\x89"


def global_(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def py2_str(data):
    """A Python 2 `str` (bytes): SHORT_BINSTRING below 256 bytes, else BINSTRING."""
    if isinstance(data, str):
        data = data.encode("latin-1")
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data
    return b"T" + struct.pack("<i", len(data)) + data


def integer(n):
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if 0 <= n < 65536:
        return b"M" + struct.pack("<H", n)
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    return b"I" + str(n).encode() + b"\n"  # cPickle's text INT for 64-bit values


def tuple_(items):
    body = b"".join(dumps_value(x) for x in items)
    if len(items) == 1:
        return body + TUPLE1
    if len(items) == 3:
        return body + TUPLE3
    return MARK + body + TUPLE


def dtype_(dt):
    order = "|" if dt.itemsize == 1 or dt.byteorder == "|" else (">" if dt.byteorder == ">" else "<")
    typestr = dt.str[1:] if dt.kind != "b" else "b1"
    return (
        global_("numpy", "dtype") + py2_str(typestr) + integer(0) + integer(1) + TUPLE3 + REDUCE
        + MARK + integer(3) + py2_str(order) + NONE + NONE + NONE + integer(-1) + integer(-1) + integer(0)
        + TUPLE + BUILD
    )


def ndarray(a):
    fortran = a.ndim > 1 and a.flags.f_contiguous and not a.flags.c_contiguous
    data = a.tobytes(order="F" if fortran else "C")
    head = global_("numpy.core.multiarray", "_reconstruct") + global_("numpy", "ndarray")
    head += integer(0) + TUPLE1 + py2_str(b"b") + TUPLE3 + REDUCE
    state = MARK + integer(1) + tuple_(list(a.shape)) + dtype_(a.dtype)
    state += (NEWTRUE if fortran else NEWFALSE) + py2_str(data) + TUPLE
    return head + state + BUILD


def scalar(x):
    # numpy scalars: numpy.core.multiarray.scalar(dtype, raw bytes)
    return global_("numpy.core.multiarray", "scalar") + dtype_(x.dtype) + py2_str(x.tobytes()) + b"\x86" + REDUCE


def dumps_value(x):
    if x is None:
        return NONE
    if x is True:
        return NEWTRUE
    if x is False:
        return NEWFALSE
    if isinstance(x, np.ndarray):
        return ndarray(x)
    if isinstance(x, np.generic):
        return scalar(x)
    if isinstance(x, int):
        return integer(x)
    if isinstance(x, float):
        return b"G" + struct.pack(">d", x)
    if isinstance(x, (str, bytes)):
        return py2_str(x)
    if isinstance(x, tuple):
        return tuple_(x) if x else b")"
    if isinstance(x, list):
        return EMPTY_LIST + (MARK + b"".join(dumps_value(v) for v in x) + APPENDS if x else b"")
    if isinstance(x, dict):
        items = b"".join(dumps_value(k) + dumps_value(v) for k, v in x.items())
        return EMPTY_DICT + (MARK + items + SETITEMS if x else b"")
    raise TypeError(f"no Python 2 pickle form for {type(x).__name__}")


def dumps(obj):
    return PROTO + dumps_value(obj) + STOP
