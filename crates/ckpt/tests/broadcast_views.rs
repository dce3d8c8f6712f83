//! Tensors with zero strides (torch's expanded views) can declare far more elements than
//! their storage holds: a tiny file must not make byte counts overflow or reads allocate
//! what it declares.

use ckpt::format::{load_bytes, LoadOptions};
use ckpt::Value;

mod read_common;
use read_common::{tensor_dict_pickle, torch_zip, Entry};

fn expanded(shape: &[i64], stride: &[i64]) -> Vec<u8> {
    let pickle = tensor_dict_pickle(&[Entry {
        name: "w",
        key: "0",
        numel: 1,
        offset: 0,
        shape,
        stride,
    }]);
    torch_zip(pickle, vec![("0".into(), vec![0; 4])])
}

fn load(bytes: Vec<u8>) -> ckpt::Result<Value> {
    load_bytes(bytes, &LoadOptions::default()).map(|l| l.value)
}

#[test]
fn an_expanded_view_whose_byte_size_overflows_is_an_error() {
    // 2^62 float32 elements: the element count fits in 64 bits, the byte count does not.
    let err = load(expanded(&[1 << 62], &[0])).unwrap_err();
    assert!(
        err.to_string().contains("bytes") || err.to_string().contains("overflow"),
        "{err}"
    );
}

#[test]
fn an_expanded_view_of_one_element_reads() {
    let value = load(expanded(&[3, 1000], &[0, 0])).unwrap();
    let t = value.get("w").unwrap().as_tensor().unwrap();
    assert_eq!(t.nbytes(), 12_000);
    assert_eq!(t.to_vec::<f32>().unwrap(), vec![0.0; 3000]);
}

fn huge_views(count: usize) -> ckpt::StateDict {
    let one = ckpt::Tensor::from_slice(&[0f32], &[1]).unwrap();
    (0..count)
        .map(|i| {
            // 2^60 float32 elements over one: 2^62 bytes.
            (format!("t{i}"), one.view(&[1 << 60], &[0], 0).unwrap())
        })
        .collect()
}

#[test]
fn safetensors_of_views_too_big_to_gather_is_an_error_naming_the_tensor() {
    let mut out = Vec::new();
    let err = ckpt::format::write_safetensors(&mut out, &huge_views(1), None).unwrap_err();
    assert!(err.to_string().contains("t0"), "{err}");
    let err = ckpt::format::write_safetensors(&mut out, &huge_views(5), None).unwrap_err();
    assert!(err.to_string().contains("more bytes than a file"), "{err}");
}
