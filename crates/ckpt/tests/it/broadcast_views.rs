//! Tensors with zero strides (torch's expanded views) can declare far more elements than
//! their storage holds: a tiny file must not make byte counts overflow or reads allocate
//! what it declares.

use ckpt::format::{load_bytes, LoadOptions};
use ckpt::Value;

use crate::support::archive::{tensor_dict_pickle, torch_zip, Entry};

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

#[test]
fn writing_an_expanded_view_that_needs_its_own_copy_is_an_error_not_an_abort() {
    let base = ckpt::Tensor::from_slice(&[0f32], &[1]).unwrap();
    // The same four bytes seen as int32 and expanded to 2^60 elements: torch files keep one
    // dtype per storage, so this tensor must be copied out to be written.
    let as_int = ckpt::Tensor::new(
        ckpt::DType::Int32,
        vec![1 << 60],
        vec![0],
        0,
        base.storage().clone(),
    )
    .unwrap();
    let mut dict = ckpt::Dict::new();
    dict.insert("float", Value::Tensor(base));
    dict.insert("int", Value::Tensor(as_int));
    let options = ckpt::format::SaveOptions::default().with_archive_name("a");
    let err = ckpt::format::write_torch(&mut Vec::new(), &Value::Dict(dict), &options).unwrap_err();
    assert!(
        matches!(err.root(), ckpt::Error::OutOfMemory { .. }),
        "{err:?}"
    );
}

#[test]
fn caffe2_class_scores_as_a_huge_expanded_view_are_an_error_not_an_abort() {
    let one = ckpt::Tensor::from_slice(&[0f32], &[1]).unwrap();
    let mut model = ckpt::Dict::new();
    model.insert(
        "cls_score_w",
        Value::Tensor(one.view(&[1 << 59, 2], &[0, 0], 0).unwrap()),
    );
    let mut checkpoint = ckpt::Dict::new();
    checkpoint.insert("model", Value::Dict(model));
    checkpoint.insert("__author__", Value::Str("Caffe2".into()));
    checkpoint.insert("matching_heuristics", Value::Bool(true));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c2.pth");
    ckpt::format::save_torch(&path, &Value::Dict(checkpoint), &Default::default()).unwrap();

    let mut sd = ckpt::StateDict::new();
    sd.insert(
        "roi_heads.box_predictor.cls_score.weight",
        ckpt::Tensor::zeros(ckpt::DType::Float32, &[2, 2]).unwrap(),
    );
    let model = ckpt::shared(ckpt::StateDictModel::new(sd));
    let checkpointer = ckpt::DetectionCheckpointer::new(model, "")
        .with_resolver(ckpt::resolve::Resolver::local_only());
    let err = checkpointer
        .load(path.to_str().unwrap(), ckpt::Checkpointables::All)
        .unwrap_err();
    assert!(
        matches!(err.root(), ckpt::Error::OutOfMemory { .. }),
        "{err:?}"
    );
}
