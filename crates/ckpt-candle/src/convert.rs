//! Conversions between `candle_core::Tensor` and [`ckpt::Tensor`].
//!
//! Each direction copies the elements exactly once: ckpt → candle decodes the (possibly
//! memory-mapped) bytes straight into the `Vec` candle then owns; candle → ckpt encodes the
//! contiguous CPU storage straight into the bytes ckpt owns. A strided view is made
//! contiguous first, and a tensor on a GPU is copied to the host first.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! let t = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu)?;
//! let c = ckpt_candle::to_ckpt(&t)?;
//! assert_eq!(c.shape(), &[2, 2]);
//! let back = ckpt_candle::to_candle(&c, &Device::Cpu)?;
//! assert_eq!(back.to_vec2::<f32>()?, vec![vec![1., 2.], vec![3., 4.]]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use candle_core::{CpuStorage, DType as CDType, Device, Storage, Tensor as CTensor};
use ckpt::{DType, Error as CkptError, Tensor};

use crate::error::Result;
use float8::F8E4M3;
use half::{bf16, f16};

/// Turns a candle error into a ckpt error ([`ckpt::Error::External`]: candle errors carry no
/// file or key), for code that returns `ckpt::Result` (`?` on a [`crate::Error`] does the
/// same).
pub fn candle_error(e: candle_core::Error) -> CkptError {
    CkptError::external(e)
}

/// `tensor` converted to `dtype` (a no-op when it has it already).
///
/// candle 0.11's own float8_e4m3 → f64 conversion recurses without end (a stack overflow
/// that aborts the process), so that one goes through f32, which holds every fp8 value
/// exactly.
pub fn cast(tensor: &CTensor, dtype: CDType) -> Result<CTensor> {
    let via_f32 = tensor.dtype() == CDType::F8E4M3 && dtype == CDType::F64;
    let tensor = if via_f32 {
        tensor.to_dtype(CDType::F32)?
    } else {
        tensor.clone()
    };
    Ok(tensor.to_dtype(dtype)?)
}

/// The ckpt dtype of a candle dtype, if ckpt (and torch) have it.
pub fn dtype_to_ckpt(dtype: CDType) -> Option<DType> {
    Some(match dtype {
        CDType::U8 => DType::UInt8,
        CDType::U32 => DType::UInt32,
        CDType::I16 => DType::Int16,
        CDType::I32 => DType::Int32,
        CDType::I64 => DType::Int64,
        CDType::BF16 => DType::BFloat16,
        CDType::F16 => DType::Float16,
        CDType::F32 => DType::Float32,
        CDType::F64 => DType::Float64,
        CDType::F8E4M3 => DType::Float8E4M3Fn,
        _ => return None,
    })
}

/// The candle dtype of a ckpt dtype, if candle has it (candle has no bool, int8, uint16,
/// uint64, complex or e5m2/fnuz fp8 tensors).
pub fn dtype_to_candle(dtype: DType) -> Option<CDType> {
    Some(match dtype {
        DType::UInt8 => CDType::U8,
        DType::UInt32 => CDType::U32,
        DType::Int16 => CDType::I16,
        DType::Int32 => CDType::I32,
        DType::Int64 => CDType::I64,
        DType::BFloat16 => CDType::BF16,
        DType::Float16 => CDType::F16,
        DType::Float32 => CDType::F32,
        DType::Float64 => CDType::F64,
        DType::Float8E4M3Fn => CDType::F8E4M3,
        _ => return None,
    })
}

/// Little-endian element coding, for the element types both libraries share.
trait LeBytes: Copy + candle_core::WithDType {
    const SIZE: usize;
    fn put(self, out: &mut Vec<u8>);
    /// `bytes` has exactly `SIZE` bytes.
    fn take(bytes: &[u8]) -> Self;
}

macro_rules! le_bytes {
    ($($t:ty => $n:expr, $to:expr, $from:expr;)*) => {$(
        impl LeBytes for $t {
            const SIZE: usize = $n;
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&($to)(self));
            }
            fn take(bytes: &[u8]) -> Self {
                let mut raw = [0u8; $n];
                raw.copy_from_slice(bytes);
                ($from)(raw)
            }
        }
    )*};
}

le_bytes! {
    u8 => 1, |v: u8| [v], |b: [u8; 1]| b[0];
    u32 => 4, u32::to_le_bytes, u32::from_le_bytes;
    i16 => 2, i16::to_le_bytes, i16::from_le_bytes;
    i32 => 4, i32::to_le_bytes, i32::from_le_bytes;
    i64 => 8, i64::to_le_bytes, i64::from_le_bytes;
    f32 => 4, f32::to_le_bytes, f32::from_le_bytes;
    f64 => 8, f64::to_le_bytes, f64::from_le_bytes;
    f16 => 2, f16::to_le_bytes, f16::from_le_bytes;
    bf16 => 2, bf16::to_le_bytes, bf16::from_le_bytes;
    F8E4M3 => 1, |v: F8E4M3| [v.to_bits()], |b: [u8; 1]| F8E4M3::from_bits(b[0]);
}

fn encode<T: LeBytes>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * T::SIZE);
    for &v in values {
        v.put(&mut out);
    }
    out
}

fn decode<T: LeBytes>(bytes: &[u8], shape: &[usize], device: &Device) -> Result<CTensor> {
    let values: Vec<T> = bytes.chunks_exact(T::SIZE).map(T::take).collect();
    Ok(CTensor::from_vec(values, shape, device)?)
}

/// A ckpt tensor holding a copy of `tensor`'s elements (row-major, its dtype and shape).
///
/// Fails for candle dtypes torch has no counterpart for (the fp6/fp4/e8m0 formats).
pub fn to_ckpt(tensor: &CTensor) -> Result<Tensor> {
    let dtype = dtype_to_ckpt(tensor.dtype()).ok_or_else(|| {
        CkptError::unsupported(format!(
            "candle dtype {:?} has no torch counterpart",
            tensor.dtype()
        ))
    })?;
    let host = tensor.to_device(&Device::Cpu)?.contiguous()?;
    let (storage, layout) = host.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(
            CkptError::invalid("candle tensor is not on the CPU after copying it there").into(),
        );
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| CkptError::invalid("candle tensor is not contiguous after making it so"))?;
    fn part<T>(values: &[T], start: usize, end: usize) -> Result<&[T]> {
        values
            .get(start..end)
            .ok_or_else(|| CkptError::invalid("candle tensor layout runs past its storage").into())
    }
    let bytes = match cpu {
        CpuStorage::U8(v) => encode(part(v, start, end)?),
        CpuStorage::U32(v) => encode(part(v, start, end)?),
        CpuStorage::I16(v) => encode(part(v, start, end)?),
        CpuStorage::I32(v) => encode(part(v, start, end)?),
        CpuStorage::I64(v) => encode(part(v, start, end)?),
        CpuStorage::BF16(v) => encode(part(v, start, end)?),
        CpuStorage::F16(v) => encode(part(v, start, end)?),
        CpuStorage::F32(v) => encode(part(v, start, end)?),
        CpuStorage::F64(v) => encode(part(v, start, end)?),
        CpuStorage::F8E4M3(v) => encode(part(v, start, end)?),
        _ => {
            return Err(CkptError::unsupported(format!(
                "candle dtype {:?} has no torch counterpart",
                host.dtype()
            ))
            .into())
        }
    };
    Ok(Tensor::from_bytes(dtype, host.dims(), bytes)?)
}

/// A candle tensor on `device` holding a copy of `tensor`'s elements, with its dtype and
/// shape. A strided or memory-mapped tensor is read in place (no intermediate copy).
///
/// Fails for dtypes candle does not have (bool, int8, uint16, uint64, complex, some fp8).
pub fn to_candle(tensor: &Tensor, device: &Device) -> Result<CTensor> {
    let dtype = dtype_to_candle(tensor.dtype()).ok_or_else(|| {
        CkptError::unsupported(format!("candle has no {} tensors", tensor.dtype()))
    })?;
    let bytes = tensor.try_contiguous_bytes()?;
    let shape = tensor.shape();
    match dtype {
        CDType::U8 => decode::<u8>(&bytes, shape, device),
        CDType::U32 => decode::<u32>(&bytes, shape, device),
        CDType::I16 => decode::<i16>(&bytes, shape, device),
        CDType::I32 => decode::<i32>(&bytes, shape, device),
        CDType::I64 => decode::<i64>(&bytes, shape, device),
        CDType::BF16 => decode::<bf16>(&bytes, shape, device),
        CDType::F16 => decode::<f16>(&bytes, shape, device),
        CDType::F32 => decode::<f32>(&bytes, shape, device),
        CDType::F64 => decode::<f64>(&bytes, shape, device),
        CDType::F8E4M3 => decode::<F8E4M3>(&bytes, shape, device),
        other => Err(CkptError::unsupported(format!("candle dtype {other:?}")).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_candle_view_converts_in_logical_order() {
        let t = CTensor::new(&[[1f32, 2., 3.], [4., 5., 6.]], &Device::Cpu).unwrap();
        let transposed = t.t().unwrap();
        let c = to_ckpt(&transposed).unwrap();
        assert_eq!(c.shape(), &[3, 2]);
        assert_eq!(c.to_vec::<f32>().unwrap(), vec![1., 4., 2., 5., 3., 6.]);
    }

    #[test]
    fn strided_ckpt_view_converts_in_logical_order() {
        let t = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6], &[2, 3]).unwrap();
        let transposed = t.view(&[3, 2], &[1, 3], 0).unwrap();
        let c = to_candle(&transposed, &Device::Cpu).unwrap();
        assert_eq!(
            c.to_vec2::<i64>().unwrap(),
            vec![vec![1, 4], vec![2, 5], vec![3, 6]]
        );
    }

    #[test]
    fn fp8_casts_to_f64_exactly() {
        let t = Tensor::from_bytes(DType::Float8E4M3Fn, &[3], vec![0x38, 0xC4, 0x7E]).unwrap();
        let c = cast(&to_candle(&t, &Device::Cpu).unwrap(), CDType::F64).unwrap();
        assert_eq!(c.to_vec1::<f64>().unwrap(), vec![1.0, -3.0, 448.0]);
    }

    #[test]
    fn dtypes_candle_lacks_are_refused_by_name() {
        let t = Tensor::from_slice(&[true, false], &[2]).unwrap();
        let err = to_candle(&t, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("bool"), "{err}");
    }
}
