//! Element types, named as torch names them, with their sizes and their names in each file
//! format (torch storage classes, numpy type strings, safetensors codes).

use std::fmt;

/// Every element type torch can save, named as torch names them (`torch.float32` is
/// [`DType::Float32`], printed `float32`).
///
/// ```
/// use ckpt::DType;
/// assert_eq!(DType::from_name("bfloat16"), Some(DType::BFloat16));
/// assert_eq!(DType::Float32.size(), 4);
/// assert_eq!(DType::Float32.storage_class(), Some("FloatStorage"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DType {
    /// `torch.float64` (`double`).
    Float64,
    /// `torch.float32` (`float`).
    Float32,
    /// `torch.float16` (`half`).
    Float16,
    /// `torch.bfloat16`.
    BFloat16,
    /// `torch.int64` (`long`).
    Int64,
    /// `torch.int32` (`int`).
    Int32,
    /// `torch.int16` (`short`).
    Int16,
    /// `torch.int8`.
    Int8,
    /// `torch.uint8`.
    UInt8,
    /// `torch.uint16`.
    UInt16,
    /// `torch.uint32`.
    UInt32,
    /// `torch.uint64`.
    UInt64,
    /// `torch.bool`.
    Bool,
    /// `torch.complex128` (two `float64`).
    Complex128,
    /// `torch.complex64` (two `float32`).
    Complex64,
    /// `torch.complex32` (two `float16`).
    Complex32,
    /// `torch.float8_e4m3fn`.
    Float8E4M3Fn,
    /// `torch.float8_e5m2`.
    Float8E5M2,
    /// `torch.float8_e4m3fnuz`.
    Float8E4M3Fnuz,
    /// `torch.float8_e5m2fnuz`.
    Float8E5M2Fnuz,
}

/// One row per dtype: (dtype, torch name, size, legacy storage class, numpy typestr, safetensors code).
type Row = (
    DType,
    &'static str,
    usize,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

const TABLE: &[Row] = &[
    (
        DType::Float64,
        "float64",
        8,
        Some("DoubleStorage"),
        Some("f8"),
        Some("F64"),
    ),
    (
        DType::Float32,
        "float32",
        4,
        Some("FloatStorage"),
        Some("f4"),
        Some("F32"),
    ),
    (
        DType::Float16,
        "float16",
        2,
        Some("HalfStorage"),
        Some("f2"),
        Some("F16"),
    ),
    (
        DType::BFloat16,
        "bfloat16",
        2,
        Some("BFloat16Storage"),
        None,
        Some("BF16"),
    ),
    (
        DType::Int64,
        "int64",
        8,
        Some("LongStorage"),
        Some("i8"),
        Some("I64"),
    ),
    (
        DType::Int32,
        "int32",
        4,
        Some("IntStorage"),
        Some("i4"),
        Some("I32"),
    ),
    (
        DType::Int16,
        "int16",
        2,
        Some("ShortStorage"),
        Some("i2"),
        Some("I16"),
    ),
    (
        DType::Int8,
        "int8",
        1,
        Some("CharStorage"),
        Some("i1"),
        Some("I8"),
    ),
    (
        DType::UInt8,
        "uint8",
        1,
        Some("ByteStorage"),
        Some("u1"),
        Some("U8"),
    ),
    (DType::UInt16, "uint16", 2, None, Some("u2"), Some("U16")),
    (DType::UInt32, "uint32", 4, None, Some("u4"), Some("U32")),
    (DType::UInt64, "uint64", 8, None, Some("u8"), Some("U64")),
    (
        DType::Bool,
        "bool",
        1,
        Some("BoolStorage"),
        Some("b1"),
        Some("BOOL"),
    ),
    (
        DType::Complex128,
        "complex128",
        16,
        Some("ComplexDoubleStorage"),
        Some("c16"),
        None,
    ),
    (
        DType::Complex64,
        "complex64",
        8,
        Some("ComplexFloatStorage"),
        Some("c8"),
        Some("C64"),
    ),
    (DType::Complex32, "complex32", 4, None, None, None),
    (
        DType::Float8E4M3Fn,
        "float8_e4m3fn",
        1,
        None,
        None,
        Some("F8_E4M3"),
    ),
    (
        DType::Float8E5M2,
        "float8_e5m2",
        1,
        None,
        None,
        Some("F8_E5M2"),
    ),
    (
        DType::Float8E4M3Fnuz,
        "float8_e4m3fnuz",
        1,
        None,
        None,
        Some("F8_E4M3FNUZ"),
    ),
    (
        DType::Float8E5M2Fnuz,
        "float8_e5m2fnuz",
        1,
        None,
        None,
        Some("F8_E5M2FNUZ"),
    ),
];

/// Aliases torch accepts for some dtypes (`torch.float` is `torch.float32`, ...).
const ALIASES: &[(&str, DType)] = &[
    ("float", DType::Float32),
    ("double", DType::Float64),
    ("half", DType::Float16),
    ("long", DType::Int64),
    ("int", DType::Int32),
    ("short", DType::Int16),
    ("cfloat", DType::Complex64),
    ("cdouble", DType::Complex128),
    ("chalf", DType::Complex32),
];

impl DType {
    /// All dtypes, in the order of the table above.
    pub const ALL: [DType; 20] = [
        DType::Float64,
        DType::Float32,
        DType::Float16,
        DType::BFloat16,
        DType::Int64,
        DType::Int32,
        DType::Int16,
        DType::Int8,
        DType::UInt8,
        DType::UInt16,
        DType::UInt32,
        DType::UInt64,
        DType::Bool,
        DType::Complex128,
        DType::Complex64,
        DType::Complex32,
        DType::Float8E4M3Fn,
        DType::Float8E5M2,
        DType::Float8E4M3Fnuz,
        DType::Float8E5M2Fnuz,
    ];

    fn row(
        self,
    ) -> &'static (
        DType,
        &'static str,
        usize,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    ) {
        // The table lists every variant exactly once, in declaration order.
        &TABLE[self as usize]
    }

    /// torch's name: `float32`, `bfloat16`, `float8_e4m3fn`, ...
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        self.row().2
    }

    /// The legacy typed-storage class torch pickles for this dtype (`FloatStorage`), or
    /// `None` for the dtypes torch saves as `UntypedStorage` + `_rebuild_tensor_v3`.
    pub fn storage_class(self) -> Option<&'static str> {
        self.row().3
    }

    /// numpy's type string without byte order (`f4`, `i8`, `b1`), if numpy has this dtype.
    pub fn numpy_typestr(self) -> Option<&'static str> {
        self.row().4
    }

    /// The safetensors dtype code (`F32`, `BF16`, ...), if safetensors has this dtype.
    pub fn safetensors_name(self) -> Option<&'static str> {
        self.row().5
    }

    /// Looks a dtype up by torch's name or alias (`float32`, `float`, `long`, ...).
    pub fn from_name(name: &str) -> Option<DType> {
        TABLE
            .iter()
            .find(|row| row.1 == name)
            .map(|row| row.0)
            .or_else(|| ALIASES.iter().find(|(n, _)| *n == name).map(|(_, d)| *d))
    }

    /// Looks a dtype up by legacy storage class name (`FloatStorage`).
    pub fn from_storage_class(name: &str) -> Option<DType> {
        TABLE
            .iter()
            .find(|row| row.3 == Some(name))
            .map(|row| row.0)
    }

    /// Looks a dtype up by numpy type string without byte order (`f4`, `b1`).
    pub fn from_numpy_typestr(typestr: &str) -> Option<DType> {
        TABLE
            .iter()
            .find(|row| row.4 == Some(typestr))
            .map(|row| row.0)
    }

    /// Looks a dtype up by safetensors code (`F32`).
    pub fn from_safetensors_name(name: &str) -> Option<DType> {
        TABLE
            .iter()
            .find(|row| row.5 == Some(name))
            .map(|row| row.0)
    }

    /// Whether the values are complex numbers (two real components per element).
    pub fn is_complex(self) -> bool {
        matches!(
            self,
            DType::Complex128 | DType::Complex64 | DType::Complex32
        )
    }

    /// Whether the values are floating point (real).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::Float64
                | DType::Float32
                | DType::Float16
                | DType::BFloat16
                | DType::Float8E4M3Fn
                | DType::Float8E5M2
                | DType::Float8E4M3Fnuz
                | DType::Float8E5M2Fnuz
        )
    }

    /// The unit of byte swapping: the element size, or half of it for complex numbers (each
    /// component is swapped on its own).
    pub fn swap_unit(self) -> usize {
        if self.is_complex() {
            self.size() / 2
        } else {
            self.size()
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_are_in_declaration_order() {
        for (i, dtype) in DType::ALL.iter().enumerate() {
            assert_eq!(TABLE[i].0, *dtype);
            assert_eq!(*dtype as usize, i);
            assert_eq!(DType::from_name(dtype.name()), Some(*dtype));
        }
    }

    #[test]
    fn storage_classes_round_trip() {
        for dtype in DType::ALL {
            if let Some(class) = dtype.storage_class() {
                assert_eq!(DType::from_storage_class(class), Some(dtype));
            }
        }
        assert_eq!(DType::from_storage_class("ComplexHalfStorage"), None);
    }
}
