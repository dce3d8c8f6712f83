//! Converting tensor elements between dtypes as torch's `Tensor.copy_` does, for loading a
//! checkpoint into parameters that keep their own dtype ([`cast_bytes`], [`can_cast`]).

mod elements;
mod float8;

use half::{bf16, f16};

use crate::dtype::DType;
use crate::error::{Error, Result};
use elements::{convert, E4m3fn, E4m3fnuz, E5m2, E5m2fnuz, Source, Target, C128, C32, C64};

/// Whether values of dtype `from` may be loaded into a tensor of dtype `to`: every pair
/// torch's `copy_` converts without the loss it warns about (complex into a real type other
/// than `bool`).
pub fn can_cast(from: DType, to: DType) -> bool {
    !(from.is_complex() && !to.is_complex() && to != DType::Bool)
}

/// Converts the elements in `src` (dtype `from`, little-endian, row-major) into `dst` (dtype
/// `to`), as torch's `copy_` does. `dst` must hold as many elements as `src`; a pair that
/// [`can_cast`] refuses is an error.
///
/// The rules are torch's: floats round to nearest (ties to even), through `float32` on the way
/// to the 16- and 8-bit floats; floats become integers by truncation toward zero; integers
/// wrap into narrower integers; a value is `true` when it is not zero (NaN included); a real
/// value becomes a complex one with imaginary part 0. A float outside the range of the
/// integer type it becomes is undefined in C++ and torch's result depends on the CPU and its
/// code path; here it goes through `int64` (saturating beyond it), which is what torch defines
/// for `uint8`.
///
/// torch warns that a complex value copied into a real tensor loses its imaginary part;
/// [`can_cast`] refuses that (except into `bool`, which torch computes from both parts).
///
/// ```
/// use ckpt::{can_cast, cast_bytes};
/// use ckpt::DType;
/// let src: Vec<u8> = [2.7f64, -2.7].iter().flat_map(|x| x.to_le_bytes()).collect();
/// let mut dst = vec![0u8; 2 * 8];
/// cast_bytes(&src, DType::Float64, &mut dst, DType::Int64)?;
/// assert_eq!(dst[..8], 2i64.to_le_bytes());
/// assert_eq!(dst[8..], (-2i64).to_le_bytes());
/// assert!(!can_cast(DType::Complex64, DType::Float32));
/// # Ok::<(), ckpt::Error>(())
/// ```
pub fn cast_bytes(src: &[u8], from: DType, dst: &mut [u8], to: DType) -> Result<()> {
    if !can_cast(from, to) {
        return Err(Error::DTypeMismatch {
            expected: to,
            found: from,
        });
    }
    let count = src.len() / from.size();
    if count * from.size() != src.len() || dst.len() != count * to.size() {
        return Err(Error::invalid(format!(
            "casting {} bytes of {from} needs {} bytes of {to}, got {}",
            src.len(),
            count * to.size(),
            dst.len()
        )));
    }
    if from == to {
        dst.copy_from_slice(src);
        return Ok(());
    }
    match from {
        DType::Float64 => into::<f64>(src, dst, to),
        DType::Float32 => into::<f32>(src, dst, to),
        DType::Float16 => into::<f16>(src, dst, to),
        DType::BFloat16 => into::<bf16>(src, dst, to),
        DType::Int64 => into::<i64>(src, dst, to),
        DType::Int32 => into::<i32>(src, dst, to),
        DType::Int16 => into::<i16>(src, dst, to),
        DType::Int8 => into::<i8>(src, dst, to),
        DType::UInt8 => into::<u8>(src, dst, to),
        DType::UInt16 => into::<u16>(src, dst, to),
        DType::UInt32 => into::<u32>(src, dst, to),
        DType::UInt64 => into::<u64>(src, dst, to),
        DType::Bool => into::<bool>(src, dst, to),
        DType::Complex128 => into::<C128>(src, dst, to),
        DType::Complex64 => into::<C64>(src, dst, to),
        DType::Complex32 => into::<C32>(src, dst, to),
        DType::Float8E4M3Fn => into::<E4m3fn>(src, dst, to),
        DType::Float8E5M2 => into::<E5m2>(src, dst, to),
        DType::Float8E4M3Fnuz => into::<E4m3fnuz>(src, dst, to),
        DType::Float8E5M2Fnuz => into::<E5m2fnuz>(src, dst, to),
    }
    Ok(())
}

/// The second half of the dispatch: one monomorphic loop per (source, target) pair.
fn into<S: Source>(src: &[u8], dst: &mut [u8], to: DType) {
    fn run<S: Source, T: Target>(src: &[u8], dst: &mut [u8]) {
        convert::<S, T>(src, dst);
    }
    match to {
        DType::Float64 => run::<S, f64>(src, dst),
        DType::Float32 => run::<S, f32>(src, dst),
        DType::Float16 => run::<S, f16>(src, dst),
        DType::BFloat16 => run::<S, bf16>(src, dst),
        DType::Int64 => run::<S, i64>(src, dst),
        DType::Int32 => run::<S, i32>(src, dst),
        DType::Int16 => run::<S, i16>(src, dst),
        DType::Int8 => run::<S, i8>(src, dst),
        DType::UInt8 => run::<S, u8>(src, dst),
        DType::UInt16 => run::<S, u16>(src, dst),
        DType::UInt32 => run::<S, u32>(src, dst),
        DType::UInt64 => run::<S, u64>(src, dst),
        DType::Bool => run::<S, bool>(src, dst),
        DType::Complex128 => run::<S, C128>(src, dst),
        DType::Complex64 => run::<S, C64>(src, dst),
        DType::Complex32 => run::<S, C32>(src, dst),
        DType::Float8E4M3Fn => run::<S, E4m3fn>(src, dst),
        DType::Float8E5M2 => run::<S, E5m2>(src, dst),
        DType::Float8E4M3Fnuz => run::<S, E4m3fnuz>(src, dst),
        DType::Float8E5M2Fnuz => run::<S, E5m2fnuz>(src, dst),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cast(values: &[u8], from: DType, to: DType) -> Vec<u8> {
        let mut out = vec![0u8; values.len() / from.size() * to.size()];
        cast_bytes(values, from, &mut out, to).unwrap();
        out
    }

    #[test]
    fn floats_truncate_toward_zero_and_wrap_like_torch() {
        let src: Vec<u8> = [2.7f32, -2.7, 200.5, -1.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(
            cast(&src, DType::Float32, DType::Int8),
            [2u8, (-2i8) as u8, (-56i8) as u8, 0xFF]
        );
        assert_eq!(cast(&src, DType::Float32, DType::UInt8), [2, 254, 200, 255]);
        assert_eq!(cast(&src, DType::Float32, DType::Bool), [1, 1, 1, 1]);
    }

    #[test]
    fn doubles_round_through_float32_on_the_way_to_half() {
        // Rounded directly this is above the midpoint between 1 and the next half; rounded
        // to float32 first it is exactly the midpoint, and ties go to the even 1.0.
        let x = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
        let out = cast(&x.to_le_bytes(), DType::Float64, DType::Float16);
        assert_eq!(out, f16::ONE.to_le_bytes());
    }

    #[test]
    fn complex_goes_only_into_complex_or_bool() {
        let src: Vec<u8> = [0f32, 1.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(cast(&src, DType::Complex64, DType::Bool), [1]);
        let mut out = [0u8; 4];
        let err = cast_bytes(&src, DType::Complex64, &mut out, DType::Float32).unwrap_err();
        assert!(err.to_string().contains("imaginary"), "{err}");
        let widened = cast(&src, DType::Complex64, DType::Complex128);
        assert_eq!(widened[8..], 1f64.to_le_bytes());
    }

    #[test]
    fn mismatched_lengths_are_errors() {
        let mut out = [0u8; 3];
        let err = cast_bytes(&[0; 8], DType::Float32, &mut out, DType::Float64).unwrap_err();
        assert!(matches!(err.root(), Error::Invalid { .. }), "{err:?}");
    }
}
