//! The tensor metadata torch saves after a tensor record's arguments
//! (`_rebuild_tensor_v2(..., metadata)`): `{'conj': True}` for a lazily conjugated complex
//! tensor (`t.conj()`), `{'neg': True}` for a lazily negated one (`t.conj().imag`,
//! `torch._neg_view(t)`), or both. The stored bytes are the values before conjugation or
//! negation; torch applies the bits when the tensor is read.
//!
//! ckpt resolves the bits when it reads the record, as `resolve_conj()`/`resolve_neg()`
//! would: the storage is copied once into owned memory with the imaginary parts (conj) or
//! every value (neg) negated, and the tensor keeps its view (shape, strides, offset) of the
//! copy. [`Tensor`] carries no such bits on purpose: every reader of its bytes (the
//! safetensors writer, candle, a model's copy) would otherwise have to honour them or
//! silently see wrong values, and safetensors cannot store them. Only these tensors lose
//! zero-copy; a torch file written from them holds the resolved values with the bits clear,
//! which torch loads as equal tensors (`is_conj()`/`is_neg()` are then false, as after
//! `resolve_conj()`).

use std::collections::HashMap;

use crate::dtype::DType;
use crate::pickle::invalid::Invalid;
use crate::tensor::{Storage, Tensor};
use crate::value::Value;

/// The lazy bits of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(super) struct LazyBits {
    conj: bool,
    neg: bool,
}

/// Metadata keys torch may write that do not change the values.
const IGNORED_KEYS: &[&str] = &["allow_tensor_metadata_change"];

impl LazyBits {
    /// The bits of `metadata` (the argument after the hooks; absent or `None` means none).
    /// torch sets a bit whenever its key is present, whatever the value; torch only ever
    /// writes `True`, so any other value is refused rather than read one way or the other.
    /// Unknown keys are refused too: they might change the values.
    pub(super) fn parse(function: &str, metadata: Option<&Value>) -> Result<LazyBits, Invalid> {
        let dict = match metadata {
            None | Some(Value::None) => return Ok(LazyBits::default()),
            Some(Value::Dict(d)) => d,
            Some(other) => {
                return Err(Invalid::expected(
                    function,
                    "a dict of tensor metadata",
                    format!("a {}", other.type_name()),
                ))
            }
        };
        let mut bits = LazyBits::default();
        for (key, value) in dict.iter() {
            let name = key.as_str().unwrap_or_default();
            if IGNORED_KEYS.contains(&name) {
                continue;
            }
            let slot = match name {
                "conj" => &mut bits.conj,
                "neg" => &mut bits.neg,
                _ => {
                    return Err(Invalid::Unsupported(format!(
                        "{function} with tensor metadata '{key}' (known: 'conj', 'neg')"
                    )))
                }
            };
            if !matches!(value, Value::Bool(true)) {
                return Err(Invalid::Malformed(format!("{function}: tensor metadata '{name}' must be True (torch sets the bit whenever the key is present), found {}", value.short_repr(40))));
            }
            *slot = true;
        }
        Ok(bits)
    }

    fn is_empty(self) -> bool {
        !self.conj && !self.neg
    }

    /// Why `dtype` cannot carry these bits, as torch refuses them.
    fn check(self, dtype: DType) -> Result<(), Invalid> {
        if self.conj && !dtype.is_complex() {
            return Err(Invalid::Malformed(format!("tensor metadata 'conj' on a {dtype} tensor: only complex tensors have a conjugate bit")));
        }
        if self.neg && dtype == DType::Bool {
            return Err(Invalid::Malformed(
                "tensor metadata 'neg' on a bool tensor: torch cannot negate bools".into(),
            ));
        }
        Ok(())
    }

    /// Applies the bits to one element (`element.len() == dtype.size()`, little-endian).
    fn apply(self, dtype: DType, element: &mut [u8]) {
        let size = element.len();
        if dtype.is_complex() {
            // Two floats; the sign is the top bit of each one's last byte.
            if self.neg {
                element[size / 2 - 1] ^= 0x80;
            }
            if self.conj != self.neg {
                element[size - 1] ^= 0x80;
            }
        } else if self.neg {
            negate(dtype, element);
        }
    }
}

/// Negates one real element as torch's `neg` does: floats by their sign bit (IEEE negation;
/// torch's vectorized complex kernels compute `0 - x` instead, so there a negated complex
/// zero is `+0.0`, an equal value).
fn negate(dtype: DType, element: &mut [u8]) {
    match dtype {
        // These formats have no negative zero: 0x80 is their NaN, and zero stays zero.
        DType::Float8E4M3Fnuz | DType::Float8E5M2Fnuz => {
            if element[0] & 0x7f != 0 {
                element[0] ^= 0x80;
            }
        }
        d if d.is_float() => {
            if let Some(last) = element.last_mut() {
                *last ^= 0x80;
            }
        }
        // Integers, signed or not: two's complement, wrapping (uint8 1 becomes 255).
        _ => {
            let mut carry = true;
            for byte in element.iter_mut() {
                let (sum, overflow) = (!*byte).overflowing_add(u8::from(carry));
                *byte = sum;
                carry = overflow;
            }
        }
    }
}

/// Most resolved copies of one storage (conj, neg, both): copies stay within three times the
/// storage bytes of the file, however many records ask for them.
const MAX_COPIES_PER_STORAGE: usize = 3;

/// The resolved copies made so far, by storage, so that records viewing one storage with the
/// same bits share one copy (as they shared the storage in torch).
#[derive(Default)]
pub(super) struct ResolvedStorages {
    copies: HashMap<usize, Vec<(DType, LazyBits, Storage)>>,
}

impl ResolvedStorages {
    /// `tensor` with `bits` resolved: itself when there are none, else the same view of a
    /// resolved copy of its storage.
    pub(super) fn resolve(&mut self, tensor: Tensor, bits: LazyBits) -> Result<Tensor, Invalid> {
        if bits.is_empty() {
            return Ok(tensor);
        }
        let dtype = tensor.dtype();
        bits.check(dtype)?;
        let copies = self.copies.entry(tensor.storage().id()).or_default();
        let storage = match copies.iter().find(|(d, b, _)| *d == dtype && *b == bits) {
            Some((_, _, storage)) => storage.clone(),
            None => {
                if copies.len() >= MAX_COPIES_PER_STORAGE {
                    return Err(Invalid::Limit(format!("more than {MAX_COPIES_PER_STORAGE} conjugated/negated versions of one storage (limit)")));
                }
                let storage = resolved_copy(tensor.storage(), dtype, bits)?;
                copies.push((dtype, bits, storage.clone()));
                storage
            }
        };
        let requires_grad = tensor.requires_grad();
        Tensor::new(
            dtype,
            tensor.shape().to_vec(),
            tensor.strides().to_vec(),
            tensor.storage_offset(),
            storage,
        )
        .map(|t| t.with_requires_grad(requires_grad))
        .map_err(Invalid::rejected)
    }
}

/// A copy of `storage` that owns its bytes, with `bits` applied to every whole element.
fn resolved_copy(storage: &Storage, dtype: DType, bits: LazyBits) -> Result<Storage, Invalid> {
    let source = storage.as_bytes();
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(source.len()).map_err(|_| {
        Invalid::Limit(format!(
            "cannot allocate {} bytes to resolve a conjugated/negated storage",
            source.len()
        ))
    })?;
    bytes.extend_from_slice(source);
    for element in bytes.chunks_exact_mut(dtype.size()) {
        bits.apply(dtype, element);
    }
    Ok(Storage::from_vec(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Dict;

    fn bits(pairs: &[(&str, Value)]) -> Result<LazyBits, Invalid> {
        let mut d = Dict::new();
        for (k, v) in pairs {
            d.insert(*k, v.clone());
        }
        LazyBits::parse("_rebuild_tensor_v2", Some(&Value::Dict(d)))
    }

    fn resolve(t: Tensor, b: LazyBits) -> Tensor {
        ResolvedStorages::default().resolve(t, b).unwrap()
    }

    #[test]
    fn metadata_keys_torch_writes_are_read() {
        let conj = bits(&[("conj", Value::Bool(true))]).unwrap();
        assert_eq!(
            conj,
            LazyBits {
                conj: true,
                neg: false
            }
        );
        let both = bits(&[("neg", Value::Bool(true)), ("conj", Value::Bool(true))]).unwrap();
        assert!(both.conj && both.neg);
        assert!(bits(&[]).unwrap().is_empty());
        assert!(bits(&[("allow_tensor_metadata_change", Value::Bool(true))])
            .unwrap()
            .is_empty());
        let err = bits(&[("zerotensor", Value::Bool(true))]).unwrap_err();
        assert!(
            matches!(&err, Invalid::Unsupported(m) if m.contains("'zerotensor'")),
            "{err}"
        );
        let err = bits(&[("neg", Value::Bool(false))]).unwrap_err();
        assert!(
            matches!(&err, Invalid::Malformed(m) if m.contains("must be True")),
            "{err}"
        );
    }

    #[test]
    fn conj_negates_imaginary_parts_and_neg_every_component() {
        let t = Tensor::from_slice(&[1f32, 2., -3., 4.], &[4]).unwrap();
        let c64 = Tensor::new(DType::Complex64, vec![2], vec![1], 0, t.storage().clone()).unwrap();
        let conj = resolve(
            c64.clone(),
            LazyBits {
                conj: true,
                neg: false,
            },
        );
        let floats = |t: &Tensor| {
            t.contiguous_bytes()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect::<Vec<_>>()
        };
        assert_eq!(floats(&conj), [1., -2., -3., -4.]);
        let neg = resolve(
            c64.clone(),
            LazyBits {
                conj: false,
                neg: true,
            },
        );
        assert_eq!(floats(&neg), [-1., -2., 3., -4.]);
        let both = resolve(
            c64,
            LazyBits {
                conj: true,
                neg: true,
            },
        );
        assert_eq!(floats(&both), [-1., 2., 3., 4.]);
        // The original storage is untouched.
        assert_eq!(floats(&t), [1., 2., -3., 4.]);
    }

    #[test]
    fn neg_of_integers_wraps_and_of_fnuz_keeps_zero_and_nan() {
        let neg = LazyBits {
            conj: false,
            neg: true,
        };
        let u8s = resolve(Tensor::from_slice(&[0u8, 1, 255], &[3]).unwrap(), neg);
        assert_eq!(u8s.to_vec::<u8>().unwrap(), [0, 255, 1]);
        let i64s = resolve(Tensor::from_slice(&[5i64, i64::MIN, 0], &[3]).unwrap(), neg);
        assert_eq!(i64s.to_vec::<i64>().unwrap(), [-5, i64::MIN, 0]);
        let fnuz = Tensor::from_bytes(DType::Float8E4M3Fnuz, &[3], vec![0x00, 0x80, 0x38]).unwrap();
        assert_eq!(&*resolve(fnuz, neg).contiguous_bytes(), &[0x00, 0x80, 0xb8]);
        let bools = Tensor::from_slice(&[true], &[1]).unwrap();
        assert!(ResolvedStorages::default().resolve(bools, neg).is_err());
        let real = Tensor::from_slice(&[1f32], &[1]).unwrap();
        let conj = LazyBits {
            conj: true,
            neg: false,
        };
        assert!(ResolvedStorages::default().resolve(real, conj).is_err());
    }

    #[test]
    fn views_of_one_storage_share_one_resolved_copy() {
        let base = Tensor::from_slice(&[1f64, 2., 3., 4.], &[4]).unwrap();
        let neg = LazyBits {
            conj: false,
            neg: true,
        };
        let mut resolved = ResolvedStorages::default();
        let a = resolved
            .resolve(base.view(&[2], &[1], 2).unwrap(), neg)
            .unwrap();
        let b = resolved
            .resolve(base.view(&[2], &[2], 0).unwrap(), neg)
            .unwrap();
        assert!(a.storage().same_as(b.storage()));
        assert!(!a.storage().same_as(base.storage()));
        assert_eq!(a.storage_offset(), 2);
        assert_eq!(a.to_vec::<f64>().unwrap(), [-3., -4.]);
        assert_eq!(b.to_vec::<f64>().unwrap(), [-1., -3.]);
    }
}
