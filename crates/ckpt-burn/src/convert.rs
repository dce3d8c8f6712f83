//! Conversions between burn's `TensorData` / float tensors and [`ckpt::Tensor`].
//!
//! burn hands out a tensor's elements as `TensorData` (row-major bytes in the machine's byte
//! order, which is little-endian on every platform burn supports, as in a torch file), so each
//! direction is one copy: burn → ckpt moves the bytes burn returned into the ckpt tensor; ckpt →
//! burn reads the (possibly memory-mapped or strided) ckpt bytes straight into the `Vec` burn
//! then owns.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! let device = Device::default();
//! let t = Tensor::<2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &device);
//! let c = ckpt_burn::to_ckpt(&t)?;
//! assert_eq!(c.shape(), &[2, 2]);
//! let back: Tensor<2> = ckpt_burn::to_burn(&c, &device)?;
//! assert_eq!(back.to_data().try_to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
//! # Ok::<(), ckpt::Error>(())
//! ```

use burn::tensor::{DType as BDType, Device, Tensor as BTensor, TensorData};
use ckpt::{can_cast, DType, Error, Result, Tensor};

/// The ckpt dtype of a burn dtype, if torch has it (burn's quantized and `Flex32` formats
/// have no torch counterpart).
pub fn dtype_to_ckpt(dtype: BDType) -> Option<DType> {
    Some(match dtype {
        BDType::F64 => DType::Float64,
        BDType::F32 => DType::Float32,
        BDType::F16 => DType::Float16,
        BDType::BF16 => DType::BFloat16,
        BDType::I64 => DType::Int64,
        BDType::I32 => DType::Int32,
        BDType::I16 => DType::Int16,
        BDType::I8 => DType::Int8,
        BDType::U64 => DType::UInt64,
        BDType::U32 => DType::UInt32,
        BDType::U16 => DType::UInt16,
        BDType::U8 => DType::UInt8,
        _ => return None,
    })
}

/// The burn dtype of a ckpt float dtype, if burn has it (burn has no complex or fp8 tensors).
pub fn float_dtype_to_burn(dtype: DType) -> Option<BDType> {
    Some(match dtype {
        DType::Float64 => BDType::F64,
        DType::Float32 => BDType::F32,
        DType::Float16 => BDType::F16,
        DType::BFloat16 => BDType::BF16,
        _ => return None,
    })
}

/// A ckpt tensor holding `data`'s elements (its dtype and shape); the bytes move, no copy.
pub fn data_to_ckpt(data: TensorData) -> Result<Tensor> {
    let dtype = dtype_to_ckpt(data.dtype()).ok_or_else(|| {
        Error::unsupported(format!(
            "burn dtype {:?} has no torch counterpart",
            data.dtype()
        ))
    })?;
    let shape: Vec<usize> = data.shape().iter().copied().collect();
    let bytes = data.into_bytes().to_vec();
    Tensor::from_bytes(dtype, &shape, bytes)
}

/// A ckpt tensor holding a copy of a burn float tensor's elements.
pub fn to_ckpt<const D: usize>(tensor: &BTensor<D>) -> Result<Tensor> {
    data_to_ckpt(tensor.to_data())
}

/// `tensor`'s elements as burn `TensorData` of `dtype`, converted with torch's `copy_` rules
/// ([`ckpt::cast_bytes`]) when the dtypes differ. Refuses a dtype that cannot be loaded into
/// `dtype` (complex into real) or that burn lacks.
pub fn to_burn_data(tensor: &Tensor, dtype: DType) -> Result<TensorData> {
    let burn_dtype = float_dtype_to_burn(dtype)
        .ok_or_else(|| Error::unsupported(format!("burn has no {dtype} float tensors")))?;
    let shape: Vec<usize> = tensor.shape().to_vec();
    let bytes = if tensor.dtype() == dtype {
        tensor.try_contiguous_bytes()?.into_owned()
    } else if can_cast(tensor.dtype(), dtype) {
        tensor
            .to_owned_as(dtype)?
            .try_contiguous_bytes()?
            .into_owned()
    } else {
        return Err(Error::DTypeMismatch {
            expected: dtype,
            found: tensor.dtype(),
        });
    };
    Ok(TensorData::from_bytes_vec(bytes, shape, burn_dtype))
}

/// A burn float tensor on `device` holding a copy of `tensor` (whose rank must be `D`), in
/// the tensor's own float dtype (a non-float tensor is converted to float32).
pub fn to_burn<const D: usize>(tensor: &Tensor, device: &Device) -> Result<BTensor<D>> {
    if tensor.shape().len() != D {
        return Err(Error::invalid(format!(
            "expected a tensor of rank {D}, found shape {:?}",
            tensor.shape()
        )));
    }
    let dtype = if float_dtype_to_burn(tensor.dtype()).is_some() {
        tensor.dtype()
    } else {
        DType::Float32
    };
    Ok(BTensor::from_data(to_burn_data(tensor, dtype)?, device))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_ckpt_view_converts_in_logical_order() {
        let t = Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6.], &[2, 3]).unwrap();
        let transposed = t.view(&[3, 2], &[1, 3], 0).unwrap();
        let b: BTensor<2> = to_burn(&transposed, &Device::default()).unwrap();
        assert_eq!(
            b.to_data().try_to_vec::<f32>().unwrap(),
            vec![1., 4., 2., 5., 3., 6.]
        );
    }

    #[test]
    fn float64_loads_into_float32_with_torch_rounding() {
        let t = Tensor::from_slice(&[0.1f64, -2.5], &[2]).unwrap();
        let data = to_burn_data(&t, DType::Float32).unwrap();
        assert_eq!(data.try_to_vec::<f32>().unwrap(), vec![0.1f32, -2.5]);
    }

    #[test]
    fn complex_is_refused_by_dtype() {
        let t = Tensor::zeros(DType::Complex64, &[2]).unwrap();
        let err = to_burn_data(&t, DType::Float32).unwrap_err();
        assert!(err.to_string().contains("complex"), "{err}");
    }
}
