//! Hand-made numpy pickles, laid out as Python writes them: Detectron1 files (Python 2,
//! arrays' bytes in `BINSTRING`s), detectron2 model-zoo files (Python 3, `BINBYTES`) and
//! protocol 5 (`_frombuffer` of a `BYTEARRAY8`). Shared by the tests of every crate; written
//! straight to a writer so that a test can make a file of hundreds of MiB cheaply.

use std::io::{self, Write};

/// How an array's bytes are pickled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Python 2 (`cPickle`, protocol 2): `_reconstruct` + `BUILD`, data as a `str`.
    Py2,
    /// Python 3 (protocol 3): `_reconstruct` + `BUILD`, data as `bytes`.
    Py3,
    /// Protocol 5: `_frombuffer(bytearray, dtype, shape, order)`.
    Frombuffer,
}

/// One array of a pickled dict `{name: array}`.
pub struct Array<'a> {
    pub name: &'a str,
    /// numpy's type string without byte order (`f4`, `i8`, `u1`).
    pub typestr: &'a str,
    pub big_endian: bool,
    pub shape: &'a [usize],
    pub fortran: bool,
    /// The raw bytes, in the array's byte order and memory order.
    pub data: &'a [u8],
}

/// Writes the pickle of a dict of `arrays` (in order) to `out`.
pub fn write_numpy_pickle(out: &mut dyn Write, layout: Layout, arrays: &[Array]) -> io::Result<()> {
    let protocol = match layout {
        Layout::Py2 => 2,
        Layout::Py3 => 3,
        Layout::Frombuffer => 5,
    };
    out.write_all(&[0x80, protocol, b'}', b'('])?;
    for array in arrays {
        text(out, layout, array.name)?;
        match layout {
            Layout::Py2 | Layout::Py3 => reconstructed(out, layout, array)?,
            Layout::Frombuffer => frombuffer(out, array)?,
        }
    }
    out.write_all(b"u.")
}

/// The pickle of `arrays` in memory.
pub fn numpy_pickle(layout: Layout, arrays: &[Array]) -> Vec<u8> {
    let mut out = Vec::new();
    write_numpy_pickle(&mut out, layout, arrays).expect("writing to memory");
    out
}

fn text(out: &mut dyn Write, layout: Layout, s: &str) -> io::Result<()> {
    if layout == Layout::Py2 {
        out.write_all(b"T")?;
        out.write_all(&(s.len() as i32).to_le_bytes())?;
    } else {
        out.write_all(b"X")?;
        out.write_all(&(s.len() as u32).to_le_bytes())?;
    }
    out.write_all(s.as_bytes())
}

fn int(out: &mut dyn Write, v: i32) -> io::Result<()> {
    out.write_all(b"J")?;
    out.write_all(&v.to_le_bytes())
}

fn shape(out: &mut dyn Write, dims: &[usize]) -> io::Result<()> {
    out.write_all(b"(")?;
    for &d in dims {
        int(out, d as i32)?;
    }
    out.write_all(b"t")
}

/// `numpy.dtype(typestr, False, True)` with its `BUILD` state.
fn dtype(out: &mut dyn Write, layout: Layout, array: &Array) -> io::Result<()> {
    out.write_all(b"cnumpy\ndtype\n")?;
    text(out, layout, array.typestr)?;
    out.write_all(&[0x89, 0x88, 0x87, b'R', b'('])?;
    int(out, 3)?;
    text(out, layout, if array.big_endian { ">" } else { "<" })?;
    out.write_all(b"NNN")?;
    int(out, -1)?;
    int(out, -1)?;
    int(out, 0)?;
    out.write_all(b"tb")
}

fn reconstructed(out: &mut dyn Write, layout: Layout, array: &Array) -> io::Result<()> {
    out.write_all(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")?;
    int(out, 0)?;
    out.write_all(&[0x85])?;
    if layout == Layout::Py2 {
        out.write_all(b"U\x01b")?;
    } else {
        out.write_all(b"C\x01b")?;
    }
    out.write_all(&[0x87, b'R', b'('])?;
    int(out, 1)?;
    shape(out, array.shape)?;
    dtype(out, layout, array)?;
    out.write_all(&[if array.fortran { 0x88 } else { 0x89 }])?;
    if layout == Layout::Py2 {
        out.write_all(b"T")?;
        out.write_all(&(array.data.len() as i32).to_le_bytes())?;
    } else {
        out.write_all(&[0x8E])?;
        out.write_all(&(array.data.len() as u64).to_le_bytes())?;
    }
    out.write_all(array.data)?;
    out.write_all(b"tb")
}

fn frombuffer(out: &mut dyn Write, array: &Array) -> io::Result<()> {
    out.write_all(b"cnumpy.core.numeric\n_frombuffer\n(")?;
    out.write_all(&[0x96])?;
    out.write_all(&(array.data.len() as u64).to_le_bytes())?;
    out.write_all(array.data)?;
    dtype(out, Layout::Frombuffer, array)?;
    shape(out, array.shape)?;
    text(
        out,
        Layout::Frombuffer,
        if array.fortran { "F" } else { "C" },
    )?;
    out.write_all(b"tR")
}
