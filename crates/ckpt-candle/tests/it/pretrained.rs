//! Pretrained weights into candle in one call, from every kind of file ckpt reads: the
//! committed fixtures (Detectron pickles of numpy arrays, torch legacy and zip files,
//! safetensors) and files torch writes live (`tests/interop/candle/torch_pretrained.py`):
//! a candle network built from the `VarBuilder` computes what the torch network computes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{batch_norm, linear, BatchNorm, Linear, VarBuilder};
use ckpt_candle::{load_tensors, load_var_builder, Pretrained};

use crate::support::{fixture, interop_script, python};

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

#[test]
fn detectron2_model_zoo_pickle_gives_its_model_entry_as_candle_tensors() {
    let tensors = load_tensors(fixture("d2_model_zoo.pkl"), DType::F32, &Device::Cpu).unwrap();
    let mut names: Vec<&str> = tensors.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "backbone.conv1.norm.num_batches_tracked",
            "backbone.conv1.weight",
            "big_endian",
            "fortran",
            "head.bias",
            "head.half",
            "scalar",
            "u16",
        ]
    );
    // numpy float16 becomes the requested float32; integers keep their values and dtype.
    let half = &tensors["head.half"];
    assert_eq!((half.dtype(), half.dims()), (DType::F32, &[2, 3][..]));
    assert_eq!(values(half), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let tracked = &tensors["backbone.conv1.norm.num_batches_tracked"];
    assert_eq!(tracked.dtype(), DType::I64);
    assert_eq!(tracked.to_scalar::<i64>().unwrap(), 5);
    // A Fortran-ordered array and a big-endian one read in logical order.
    assert_eq!(
        tensors["fortran"].to_vec2::<i32>().unwrap(),
        [[0, 1, 2], [3, 4, 5]]
    );
    assert_eq!(tensors["big_endian"].to_vec1::<i32>().unwrap(), [0, 1, 2]);
    // uint16 (which candle lacks) is widened to u32.
    assert_eq!(tensors["u16"].to_vec1::<u32>().unwrap(), [0, 1, 2]);
    let head_bias = tensors["head.bias"].to_vec1::<f32>().unwrap();
    assert_eq!(head_bias[..2], [0.5, -0.0]);
    assert!(head_bias[2].is_nan() && head_bias[3] == f32::INFINITY);
    assert_eq!(tensors["scalar"].to_scalar::<f32>().unwrap(), 2.5);
}

#[test]
fn a_named_entry_is_taken_and_its_odd_dtypes_widened() {
    // Detectron1 pickles keep their blobs under `blobs`.
    let weights = Pretrained::read_entry(fixture("detectron1_py2.pkl"), "blobs").unwrap();
    assert_eq!(weights.entry(), Some("blobs"));
    assert_eq!(
        weights.names().collect::<Vec<_>>(),
        [
            "conv1_w",
            "conv1_w_momentum",
            "fc_w",
            "fc_b_bigendian",
            "res_blob_long",
            "labels",
            "mask",
            "scalar_blob"
        ]
    );
    assert!(weights.skipped().is_empty(), "{:?}", weights.skipped());
    let tensors = weights.tensors(DType::F32, &Device::Cpu).unwrap();
    assert_eq!(tensors["mask"].dtype(), DType::U8);
    assert_eq!(tensors["mask"].to_vec1::<u8>().unwrap(), [1, 0, 1]);
    assert_eq!(
        tensors["labels"].to_vec1::<i64>().unwrap(),
        [3, -1, 1 << 40]
    );
    // Big-endian float64 to the requested float32.
    assert_eq!(tensors["fc_b_bigendian"].dtype(), DType::F32);
    assert_eq!(values(&tensors["fc_b_bigendian"])[..2], [1.5, -2.25]);
}

#[test]
fn a_missing_named_entry_is_an_error_listing_the_entries() {
    let path = fixture("d2_model_zoo.pkl");
    let err = ckpt::Error::from(Pretrained::read_entry(&path, "state_dict").unwrap_err());
    assert_eq!(err.path(), Some(path.as_path()), "{err:?}");
    assert!(
        matches!(err.root(), ckpt::Error::MissingKey { key, available }
            if key == "state_dict" && available.iter().any(|k| k == "model")
                && available.iter().any(|k| k == "__author__")),
        "{err:?}"
    );
    let message = err.report().to_string();
    assert!(message.contains("no entry 'state_dict'"), "{message}");
}

#[test]
fn without_a_model_entry_the_whole_file_is_flattened_and_non_tensors_are_skipped() {
    // legacy.pt: {"sd": state dict, "views": tensors, "misc": numbers, strings, ...}.
    let weights = Pretrained::read(fixture("legacy.pt")).unwrap();
    assert_eq!(weights.entry(), None);
    let names: Vec<&str> = weights.names().collect();
    assert_eq!(names[..2], ["sd.0.weight", "sd.0.bias"]);
    assert!(names.contains(&"views.transposed"), "{names:?}");
    assert!(names.iter().all(|n| !n.starts_with("misc.")), "{names:?}");
    let skipped: Vec<String> = weights.skipped().iter().map(|s| s.to_string()).collect();
    for expected in [
        "misc.unicode (str)",
        "misc.complex (complex)",
        "misc.none (NoneType)",
    ] {
        assert!(
            skipped.iter().any(|s| s == expected),
            "{expected}: {skipped:?}"
        );
    }
    let tensors = weights.tensors(DType::F64, &Device::Cpu).unwrap();
    // A transposed view reads in logical order; float32 becomes the requested float64.
    let base = values(&tensors["views.base"]);
    let transposed = &tensors["views.transposed"];
    assert_eq!(
        (transposed.dtype(), transposed.dims()),
        (DType::F64, &[4, 3][..])
    );
    assert_eq!(values(transposed)[..3], [base[0], base[4], base[8]]);
}

#[test]
fn dtypes_candle_lacks_are_widened_or_skipped_by_name() {
    let weights = Pretrained::read(fixture("dtypes.pt")).unwrap();
    let skipped: Vec<String> = weights.skipped().iter().map(|s| s.to_string()).collect();
    for dtype in [
        "uint64",
        "complex128",
        "complex64",
        "complex32",
        "float8_e5m2",
        "float8_e4m3fnuz",
        "float8_e5m2fnuz",
    ] {
        let entry = format!("{dtype}_4d ({dtype} tensor: candle has no such dtype)");
        assert!(skipped.contains(&entry), "{entry}: {skipped:?}");
    }
    let tensors = weights.tensors(DType::BF16, &Device::Cpu).unwrap();
    assert_eq!(tensors["bool_4d"].dtype(), DType::U8);
    assert_eq!(tensors["int8_4d"].dtype(), DType::I16);
    assert_eq!(tensors["uint16_4d"].dtype(), DType::U32);
    assert_eq!(tensors["int32_4d"].dtype(), DType::I32);
    for float in ["float64_4d", "float32_4d", "float16_4d", "float8_e4m3fn_4d"] {
        assert_eq!(tensors[float].dtype(), DType::BF16, "{float}");
    }
    assert_eq!(tensors["float32_empty"].dims(), &[0, 3]);
}

#[test]
fn safetensors_file_gives_a_var_builder() {
    let vb = load_var_builder(
        fixture("writer/sd_plain.safetensors"),
        DType::F64,
        &Device::Cpu,
    )
    .unwrap();
    let w = vb.get((2, 3), "w").unwrap();
    assert_eq!(w.dtype(), DType::F64);
    assert_eq!(values(&w), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(values(&vb.get(2, "b").unwrap()), [1.5, -2.0]);
    // The VarBuilder checks the shape the model asks for.
    let err = vb.get((3, 2), "w").unwrap_err();
    assert!(
        matches!(&err, candle_core::Error::UnexpectedShape { got, .. } if got.dims() == [2, 3])
            || matches!(&err, candle_core::Error::WithBacktrace { inner, .. }
                if matches!(**inner, candle_core::Error::UnexpectedShape { .. })),
        "{err:?}"
    );
}

#[test]
fn a_file_with_no_tensors_is_an_error_saying_what_it_holds() {
    let path = fixture("misc.pt");
    let err = ckpt::Error::from(Pretrained::read(&path).unwrap_err());
    assert_eq!(err.path(), Some(path.as_path()), "{err:?}");
    assert!(
        matches!(err.root(), ckpt::Error::Invalid { message }
            if message.contains("no tensors")
                && message.contains("'int_keys' (dict), 'nested' (list)")),
        "{err:?}"
    );
}

// ---- Files torch writes live ----

#[derive(serde::Deserialize)]
struct TorchSide {
    x: Vec<Vec<f32>>,
    y: Vec<Vec<f64>>,
    y_half: Vec<Vec<f64>>,
    names: Vec<String>,
}

/// The directory of files torch_pretrained.py wrote and what it printed (run once for all
/// tests of this binary), or `None` to skip.
fn torch_files() -> Option<&'static (PathBuf, TorchSide)> {
    static FILES: OnceLock<Option<(PathBuf, TorchSide)>> = OnceLock::new();
    FILES
        .get_or_init(|| {
            let python = python::interop_python(
                "the pretrained-weights interop tests",
                "torch, safetensors",
            )?;
            let dir = tempfile::tempdir().unwrap().keep();
            let script = interop_script("candle/torch_pretrained.py");
            let line = python::run_script_last_line(&python, &script, &[dir.to_str().unwrap()]);
            let side = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("bad JSON from python ({e}): {line}"));
            Some((dir, side))
        })
        .as_ref()
}

/// torch_pretrained.py's `Net`: stem → bn → relu → head.
struct Net {
    stem: Linear,
    bn: BatchNorm,
    head: Linear,
}

impl Net {
    fn new(vb: VarBuilder) -> candle_core::Result<Net> {
        Ok(Net {
            stem: linear(4, 8, vb.pp("stem"))?,
            bn: batch_norm(8, 1e-5, vb.pp("bn"))?,
            head: linear(8, 2, vb.pp("head"))?,
        })
    }

    fn eval(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.bn.forward_t(&self.stem.forward(x)?, false)?.relu()?;
        self.head.forward(&h)
    }
}

/// The candle network built from `vb` computes torch's output within `tolerance`.
fn assert_computes(vb: VarBuilder, torch: &TorchSide, expected: &[Vec<f64>], tolerance: f64) {
    let dtype = vb.dtype();
    let net = Net::new(vb).unwrap();
    let x = Tensor::new(torch.x.clone(), &Device::Cpu)
        .and_then(|x| x.to_dtype(dtype))
        .unwrap();
    let y = net
        .eval(&x)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    for (row, expected_row) in y.iter().zip(expected) {
        for (got, want) in row.iter().zip(expected_row) {
            assert!(
                (got - want).abs() <= tolerance,
                "{y:?} vs torch {expected:?}"
            );
        }
    }
}

#[test]
fn torch_checkpoint_model_entry_builds_a_network_computing_what_torch_computes() {
    let Some((dir, torch)) = torch_files() else {
        return;
    };
    let weights = Pretrained::read(dir.join("detectron2.pth")).unwrap();
    assert_eq!(weights.entry(), Some("model"));
    // The file's order (torch's state_dict order), not sorted.
    assert_eq!(weights.names().collect::<Vec<_>>(), torch.names);
    assert!(weights.skipped().is_empty());
    assert_computes(
        weights.var_builder(DType::F32, &Device::Cpu).unwrap(),
        torch,
        &torch.y,
        1e-6,
    );
}

#[test]
fn lightning_checkpoint_state_dict_entry_by_name() {
    let Some((dir, torch)) = torch_files() else {
        return;
    };
    let weights = Pretrained::read_entry(dir.join("lightning.ckpt"), "state_dict").unwrap();
    assert_computes(
        weights
            .var_builder(DType::F32, &Device::Cpu)
            .unwrap()
            .pp("net"),
        torch,
        &torch.y,
        1e-6,
    );
}

#[test]
fn legacy_torch_file_and_float16_safetensors_in_one_call() {
    let Some((dir, torch)) = torch_files() else {
        return;
    };
    let vb = load_var_builder(dir.join("legacy.pt"), DType::F64, &Device::Cpu).unwrap();
    assert_computes(vb, torch, &torch.y, 1e-6);
    // float16 weights computed in float32 by torch, in float32 here.
    let vb = load_var_builder(dir.join("net.safetensors"), DType::F32, &Device::Cpu).unwrap();
    assert_computes(vb, torch, &torch.y_half, 1e-6);
    let tensors: HashMap<String, Tensor> =
        load_tensors(dir.join("net.safetensors"), DType::F16, &Device::Cpu).unwrap();
    assert_eq!(tensors["stem.weight"].dtype(), DType::F16);
    assert_eq!(tensors["bn.num_batches_tracked"].dtype(), DType::I64);
}

#[test]
fn a_sharded_safetensors_directory_gives_its_tensors_as_one_checkpoint() {
    let mut state = ckpt::StateDict::new();
    for i in 0..4 {
        let data: Vec<f32> = (0..6).map(|x| (10 * i + x) as f32).collect();
        state.insert(
            format!("layer{i}.weight"),
            ckpt::Tensor::from_slice(&data, &[2, 3]).unwrap(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let options = ckpt::format::ShardedOptions::new(48);
    let written = ckpt::format::save_sharded_safetensors(dir.path(), &state, &options).unwrap();
    assert_eq!(written.shards.len(), 2);
    let tensors = load_tensors(dir.path(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(tensors.len(), 4);
    assert_eq!(
        values(&tensors["layer3.weight"]),
        [30.0, 31.0, 32.0, 33.0, 34.0, 35.0]
    );
}
