//! The element types of every dtype as Rust values, and how each converts to each other the
//! way torch's `copy_` converts (C++ `static_cast`, with torch's own rules where C++ leaves
//! the result undefined).
//!
//! A conversion is monomorphic per (source, target) pair, so that [`convert`] compiles to a
//! plain loop over the bytes with no dispatch per element.

use half::{bf16, f16};

use super::float8::{Float8Format, E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ};

/// An element read from little-endian bytes, with the values torch derives from it.
pub(crate) trait Source: Copy {
    /// Bytes per element.
    const SIZE: usize;
    /// Decodes one element from exactly `SIZE` bytes.
    fn read(bytes: &[u8]) -> Self;
    fn to_f64(self) -> f64;
    fn to_f32(self) -> f32;
    /// The value truncated toward zero (floats) or reinterpreted (integers) as an `i64`,
    /// from which every integer type narrower than 64 bits wraps. A float outside the
    /// `i64` range saturates (C++ leaves that undefined; torch's result varies).
    fn to_i64(self) -> i64;
    /// As [`Source::to_i64`], but floats in `[2^63, 2^64)` keep their value.
    fn to_u64(self) -> u64 {
        self.to_i64() as u64
    }
    /// `x != 0` (NaN is true; a complex number is non-zero when either part is).
    fn is_nonzero(self) -> bool;
    /// torch rounds to 16-bit floats from `f32`, so a value is rounded twice on the way.
    fn to_f16(self) -> f16 {
        f16::from_f32(self.to_f32())
    }
    fn to_bf16(self) -> bf16 {
        bf16::from_f32(self.to_f32())
    }
    /// The complex number (imaginary part 0 for a real value).
    fn to_c128(self) -> C128 {
        C128(self.to_f64(), 0.0)
    }
    fn to_c64(self) -> C64 {
        C64(self.to_f32(), 0.0)
    }
    fn to_c32(self) -> C32 {
        C32(self.to_f16(), f16::ZERO)
    }
}

/// An element written as little-endian bytes, made from any [`Source`].
pub(crate) trait Target: Copy {
    /// Bytes per element.
    const SIZE: usize;
    fn from_source<S: Source>(value: S) -> Self;
    /// Encodes into exactly `SIZE` bytes.
    fn write(self, out: &mut [u8]);
}

/// Converts every element of `src` (a whole number of `S`) into `dst` (as many `T`).
pub(crate) fn convert<S: Source, T: Target>(src: &[u8], dst: &mut [u8]) {
    for (from, to) in src.chunks_exact(S::SIZE).zip(dst.chunks_exact_mut(T::SIZE)) {
        T::from_source(S::read(from)).write(to);
    }
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut raw = [0u8; N];
    raw.copy_from_slice(bytes);
    raw
}

macro_rules! float_source {
    ($t:ty, $n:expr) => {
        impl Source for $t {
            const SIZE: usize = $n;
            fn read(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(array(bytes))
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn to_f32(self) -> f32 {
                self as f32
            }
            fn to_i64(self) -> i64 {
                self as i64
            }
            fn to_u64(self) -> u64 {
                if self >= 9_223_372_036_854_775_808.0 {
                    self as u64
                } else {
                    self as i64 as u64
                }
            }
            fn is_nonzero(self) -> bool {
                self != 0.0
            }
        }
    };
}

float_source!(f64, 8);
float_source!(f32, 4);

macro_rules! half_source {
    ($t:ty, $own:ident) => {
        impl Source for $t {
            const SIZE: usize = 2;
            fn read(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(array(bytes))
            }
            fn to_f64(self) -> f64 {
                self.to_f64()
            }
            fn to_f32(self) -> f32 {
                self.to_f32()
            }
            fn to_i64(self) -> i64 {
                self.to_f32().to_i64()
            }
            fn to_u64(self) -> u64 {
                self.to_f32().to_u64()
            }
            fn is_nonzero(self) -> bool {
                self.to_f32() != 0.0
            }
            // A value keeps its bits (NaN payloads too) in its own type.
            fn $own(self) -> $t {
                self
            }
        }
    };
}

half_source!(f16, to_f16);
half_source!(bf16, to_bf16);

macro_rules! int_source {
    ($($t:ty => $n:expr),*) => {$(
        impl Source for $t {
            const SIZE: usize = $n;
            fn read(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(array(bytes))
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn to_f32(self) -> f32 {
                self as f32
            }
            fn to_i64(self) -> i64 {
                self as i64
            }
            fn to_u64(self) -> u64 {
                self as u64
            }
            fn is_nonzero(self) -> bool {
                self != 0
            }
        }
    )*};
}

int_source!(i64 => 8, i32 => 4, i16 => 2, i8 => 1, u8 => 1, u16 => 2, u32 => 4, u64 => 8);

impl Source for bool {
    const SIZE: usize = 1;
    fn read(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn to_f64(self) -> f64 {
        f64::from(u8::from(self))
    }
    fn to_f32(self) -> f32 {
        f32::from(u8::from(self))
    }
    fn to_i64(self) -> i64 {
        i64::from(self)
    }
    fn is_nonzero(self) -> bool {
        self
    }
}

/// A `complex128`: real and imaginary parts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct C128(f64, f64);
/// A `complex64`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct C64(f32, f32);
/// A `complex32` (two `float16`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct C32(f16, f16);

macro_rules! complex_source {
    ($t:ident, $part:ty, $n:expr) => {
        /// Only `bool` and the complex types take a complex value (the imaginary part would
        /// be lost otherwise); the real part serves the rest, as in torch.
        impl Source for $t {
            const SIZE: usize = $n;
            fn read(bytes: &[u8]) -> Self {
                let half = $n / 2;
                $t(
                    <$part as Source>::read(&bytes[..half]),
                    <$part as Source>::read(&bytes[half..]),
                )
            }
            fn to_f64(self) -> f64 {
                self.0.to_f64()
            }
            fn to_f32(self) -> f32 {
                self.0.to_f32()
            }
            fn to_i64(self) -> i64 {
                self.0.to_i64()
            }
            fn is_nonzero(self) -> bool {
                self.0.is_nonzero() || self.1.is_nonzero()
            }
            fn to_c128(self) -> C128 {
                C128(self.0.to_f64(), self.1.to_f64())
            }
            fn to_c64(self) -> C64 {
                C64(self.0.to_f32(), self.1.to_f32())
            }
            fn to_c32(self) -> C32 {
                C32(self.0.to_f16(), self.1.to_f16())
            }
        }
    };
}

complex_source!(C128, f64, 16);
complex_source!(C64, f32, 8);
complex_source!(C32, f16, 4);

/// An element of one of the 8-bit float formats, by its bits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct F8<const KIND: u8>(u8);

pub(crate) type E4m3fn = F8<0>;
pub(crate) type E5m2 = F8<1>;
pub(crate) type E4m3fnuz = F8<2>;
pub(crate) type E5m2fnuz = F8<3>;

const fn float8_format(kind: u8) -> Float8Format {
    match kind {
        0 => E4M3FN,
        1 => E5M2,
        2 => E4M3FNUZ,
        _ => E5M2FNUZ,
    }
}

impl<const KIND: u8> Source for F8<KIND> {
    const SIZE: usize = 1;
    fn read(bytes: &[u8]) -> Self {
        F8(bytes[0])
    }
    fn to_f64(self) -> f64 {
        f64::from(self.to_f32())
    }
    fn to_f32(self) -> f32 {
        float8_format(KIND).decode(self.0)
    }
    fn to_i64(self) -> i64 {
        self.to_f32().to_i64()
    }
    fn to_u64(self) -> u64 {
        self.to_f32().to_u64()
    }
    fn is_nonzero(self) -> bool {
        self.to_f32() != 0.0
    }
}

impl<const KIND: u8> Target for F8<KIND> {
    const SIZE: usize = 1;
    fn from_source<S: Source>(value: S) -> Self {
        F8(float8_format(KIND).encode(value.to_f32()))
    }
    fn write(self, out: &mut [u8]) {
        out[0] = self.0;
    }
}

macro_rules! target {
    ($($t:ty => $n:expr, |$v:ident| $make:expr);* $(;)?) => {$(
        impl Target for $t {
            const SIZE: usize = $n;
            fn from_source<S: Source>($v: S) -> Self {
                $make
            }
            fn write(self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}

target! {
    f64 => 8, |v| v.to_f64();
    f32 => 4, |v| v.to_f32();
    f16 => 2, |v| v.to_f16();
    bf16 => 2, |v| v.to_bf16();
    i64 => 8, |v| v.to_i64();
    i32 => 4, |v| v.to_i64() as i32;
    i16 => 2, |v| v.to_i64() as i16;
    i8 => 1, |v| v.to_i64() as i8;
    u8 => 1, |v| v.to_i64() as u8;
    u16 => 2, |v| v.to_i64() as u16;
    u32 => 4, |v| v.to_i64() as u32;
    u64 => 8, |v| v.to_u64();
}

impl Target for bool {
    const SIZE: usize = 1;
    fn from_source<S: Source>(value: S) -> Self {
        value.is_nonzero()
    }
    fn write(self, out: &mut [u8]) {
        out[0] = u8::from(self);
    }
}

macro_rules! complex_target {
    ($t:ident, $n:expr, $make:ident) => {
        impl Target for $t {
            const SIZE: usize = $n;
            fn from_source<S: Source>(value: S) -> Self {
                value.$make()
            }
            fn write(self, out: &mut [u8]) {
                let half = $n / 2;
                out[..half].copy_from_slice(&self.0.to_le_bytes());
                out[half..].copy_from_slice(&self.1.to_le_bytes());
            }
        }
    };
}

complex_target!(C128, 16, to_c128);
complex_target!(C64, 8, to_c64);
complex_target!(C32, 4, to_c32);
