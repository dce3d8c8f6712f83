//! A value read to be copied elsewhere (`SourcePages::Release` on both ends, what
//! `ckpt convert` does) is written exactly as it is without streaming: same torch bytes,
//! same safetensors bytes, for every input format, for tensors larger than a streamed
//! piece, for views and for numpy arrays read from pickles (which are views of the file).

use std::path::Path;

use ckpt::format::{
    flatten_tensors, load_with, save_safetensors_with, save_torch, LoadOptions, SafetensorsOptions,
    SaveOptions, SourcePages, STREAM_CHUNK,
};
use ckpt::{DType, Dict, Tensor, Value};

use crate::support::fixture;
use crate::support::numpy_pickle::{numpy_pickle, Array, Layout};
use crate::support::rng::Rng;

/// Deterministic bytes that are not a repeated pattern.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    Rng(seed).bytes(len)
}

fn load(path: &Path, pages: SourcePages) -> Value {
    let options = LoadOptions::default().with_source_pages(pages);
    load_with(path, &options)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .value
}

/// The torch file and the safetensors file (of the tensors) written from `input`, read and
/// written with `pages`.
fn convert(input: &Path, pages: SourcePages, out: &Path) -> (Vec<u8>, Option<Vec<u8>>) {
    let value = load(input, pages);
    let torch = out.join("out.pth");
    let options = SaveOptions::default().with_source_pages(pages);
    save_torch(&torch, &value, &options).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
    let (tensors, _) = flatten_tensors(&value);
    let st = out.join("out.safetensors");
    let options = SafetensorsOptions::default().with_source_pages(pages);
    let safetensors = save_safetensors_with(&st, &tensors, None, &options)
        .ok()
        .map(|()| std::fs::read(&st).unwrap());
    (std::fs::read(&torch).unwrap(), safetensors)
}

fn assert_streaming_changes_nothing(input: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let kept = convert(input, SourcePages::Keep, dir.path());
    let streamed = convert(input, SourcePages::Release, dir.path());
    assert!(
        kept.0 == streamed.0,
        "{}: torch output differs when streamed",
        input.display()
    );
    assert!(
        kept.1 == streamed.1,
        "{}: safetensors output differs when streamed",
        input.display()
    );
}

#[test]
fn every_fixture_converts_to_the_same_bytes_when_streamed() {
    for name in [
        "misc.pt",
        "views.pt",
        "proto4.pt",
        "dtypes.pt",
        "optim.pt",
        "module_sd.pt",
        "legacy.pt",
        "legacy_p1.pt",
        "pycls_like.pyth",
        "d2_model_zoo.pkl",
        "d2_model_zoo_p2.pkl",
        "detectron1_py2.pkl",
        "numpy_p5.pkl",
        "writer/sd_plain.safetensors",
        "writer/adam.pt",
    ] {
        assert_streaming_changes_nothing(&fixture(name));
    }
}

#[test]
fn tensors_larger_than_a_piece_and_strided_views_convert_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let len = STREAM_CHUNK * 2 + 1000;
    let big = Tensor::from_bytes(DType::Float32, &[len / 4], noise(len, 1)).unwrap();
    let rows = 1536;
    let cols = 1024;
    let matrix =
        Tensor::from_bytes(DType::Float32, &[rows, cols], noise(rows * cols * 4, 2)).unwrap();
    // The transpose is not contiguous: safetensors output gathers it in pieces.
    let transposed = matrix.view(&[cols, rows], &[1, cols], 0).unwrap();
    let row = matrix.view(&[cols], &[1], cols * 7).unwrap();
    let expanded = row.view(&[3, cols], &[0, 1], cols * 7).unwrap();
    let mut many = Dict::new();
    for i in 0..3000 {
        let t = Tensor::from_bytes(DType::Int64, &[32], noise(256, 10 + i)).unwrap();
        many.insert(format!("t{i}"), Value::Tensor(t));
    }
    let mut root = Dict::ordered();
    root.insert("big", Value::Tensor(big));
    root.insert("transposed", Value::Tensor(transposed));
    root.insert("row", Value::Tensor(row));
    root.insert("expanded", Value::Tensor(expanded));
    root.insert("many", Value::Dict(many));
    let input = dir.path().join("input.pth");
    save_torch(&input, &Value::Dict(root), &SaveOptions::default()).unwrap();
    assert_streaming_changes_nothing(&input);

    // The same tensors read from safetensors (each its own storage).
    let (tensors, _) = flatten_tensors(&load(&input, SourcePages::Keep));
    let st = dir.path().join("input.safetensors");
    ckpt::format::save_safetensors(&st, &tensors, Some(&[("k".into(), "v".into())])).unwrap();
    assert_streaming_changes_nothing(&st);
}

fn arrays_pickle(layout: Layout, data: &[Vec<u8>]) -> Vec<u8> {
    numpy_pickle(
        layout,
        &[
            Array {
                name: "conv1_w",
                typestr: "f4",
                big_endian: false,
                shape: &[16, 8, 4, 4],
                fortran: false,
                data: &data[0],
            },
            Array {
                name: "fc_w",
                typestr: "f4",
                big_endian: false,
                shape: &[64, 96],
                fortran: true,
                data: &data[1],
            },
            Array {
                name: "big_endian",
                typestr: "i8",
                big_endian: true,
                shape: &[1024],
                fortran: false,
                data: &data[2],
            },
            Array {
                name: "bias",
                typestr: "f4",
                big_endian: false,
                shape: &[16],
                fortran: false,
                data: &data[3],
            },
        ],
    )
}

#[test]
fn numpy_arrays_of_pickles_are_views_of_the_mapped_file_and_convert_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let data = [
        noise(16 * 8 * 4 * 4 * 4, 1),
        noise(64 * 96 * 4, 2),
        noise(1024 * 8, 3),
        noise(16 * 4, 4),
    ];
    for layout in [Layout::Py2, Layout::Py3, Layout::Frombuffer] {
        let path = dir.path().join(format!("{layout:?}.pkl"));
        std::fs::write(&path, arrays_pickle(layout, &data)).unwrap();
        let value = load(&path, SourcePages::Keep);
        let array = |name: &str| match value.get(name) {
            Some(Value::NdArray(t)) => t.clone(),
            other => panic!("{layout:?} {name}: {other:?}"),
        };

        let conv = array("conv1_w");
        assert_eq!(conv.shape(), &[16, 8, 4, 4]);
        assert_eq!(&*conv.contiguous_bytes(), &data[0][..]);
        assert!(
            conv.storage().is_mapped(),
            "{layout:?}: a large array is a view of the file"
        );

        // Fortran order: element (i, j) is at i + 64 j.
        let fc = array("fc_w");
        assert!(fc.storage().is_mapped() && !fc.is_contiguous());
        let values = fc.to_vec::<f32>().unwrap();
        let raw = |k: usize| f32::from_le_bytes(data[1][4 * k..4 * k + 4].try_into().unwrap());
        assert_eq!(values[96 + 2], raw(1 + 64 * 2));

        // Big-endian: swapped into memory of its own.
        let be = array("big_endian");
        assert!(!be.storage().is_mapped());
        let expected: Vec<i64> = data[2]
            .chunks_exact(8)
            .map(|c| i64::from_be_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(be.to_vec::<i64>().unwrap(), expected);

        // Small arrays are copied (they share their page with the pickle's opcodes).
        let bias = array("bias");
        assert_eq!(&*bias.contiguous_bytes(), &data[3][..]);

        assert_streaming_changes_nothing(&path);
    }
}

#[test]
fn a_numpy_buffer_used_as_plain_bytes_is_still_bytes() {
    // A large bytes value that is not an array's buffer reads as bytes, as before.
    let mut pickle = vec![0x80, 3, b'}', b'(', b'X', 1, 0, 0, 0, b'b', 0x8E];
    let payload = noise(10_000, 9);
    pickle.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    pickle.extend_from_slice(&payload);
    pickle.extend_from_slice(b"u.");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bytes.pkl");
    std::fs::write(&path, &pickle).unwrap();
    match load(&path, SourcePages::Release).get("b") {
        Some(Value::Bytes(b)) => assert_eq!(b, &payload),
        other => panic!("{other:?}"),
    }
}
