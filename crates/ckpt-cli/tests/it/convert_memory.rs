//! `ckpt convert` holds a few MiB of the file at a time, whatever the file's size: the peak
//! memory of the `ckpt` process (its `ru_maxrss`, read when it is reaped) stays far below
//! the size of the 256 MiB files converted here, for every input format and both outputs.
//! Pages of a memory map that the process has read count in that peak, so reading the whole
//! input through its map (or copying numpy arrays out of a pickle) fails these tests.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use ckpt::format::{save_torch, SaveOptions};
use ckpt::Value;

use crate::support::numpy_pickle::{write_numpy_pickle, Array, Layout};
use crate::support::rng::Rng;
use crate::support::{example, python};

const MIB: usize = 1 << 20;
/// Size of every input.
const FILE: usize = 256 * MIB;
/// Most memory a conversion may peak at: the binary, the value's metadata and a few
/// streamed pieces; a quarter of the file.
const BOUND: u64 = 64 * MIB as u64;

/// Deterministic bytes, different for every seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    Rng(seed).bytes(len)
}

/// Writes a safetensors file of `count` float32 tensors of `bytes` bytes each, streaming.
fn write_safetensors(path: &Path, count: usize, bytes: usize) {
    let mut header = String::from("{");
    for i in 0..count {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"t{i:05}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            bytes / 4,
            i * bytes,
            (i + 1) * bytes
        ));
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = BufWriter::new(File::create(path).unwrap());
    out.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    out.write_all(header.as_bytes()).unwrap();
    for i in 0..count {
        out.write_all(&noise(bytes, i as u64)).unwrap();
    }
    out.into_inner().unwrap().sync_all().unwrap();
}

/// `input` rewritten as a torch file by the library.
fn torch_from(input: &Path, output: &Path) {
    let value = ckpt::format::load(input).unwrap();
    save_torch(output, &value, &SaveOptions::default()).unwrap();
}

/// Runs `ckpt convert input output` and returns the peak resident memory of that process.
///
/// Linux counts in a child's `ru_maxrss` the peak of the process it was spawned from (the
/// memory map it replaces at `exec`), and this test process holds hundreds of MiB. So the
/// `ckpt` process is spawned by a small process of its own, the `peak_rss` example, which
/// reports the peak on its stdout.
fn convert_peak_rss(input: &Path, output: &Path) -> u64 {
    let out = Command::new(example("peak_rss"))
        .arg(env!("CARGO_BIN_EXE_ckpt"))
        .arg("convert")
        .arg(input)
        .arg(output)
        .stdin(Stdio::null())
        .env_remove("RUST_LOG")
        .output()
        .expect("the peak_rss example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let peak = stdout
        .lines()
        .last()
        .and_then(|line| line.strip_prefix("peak-rss-bytes="))
        .and_then(|n| n.parse().ok());
    match peak {
        Some(peak) if out.status.success() => peak,
        _ => panic!(
            "measuring `ckpt convert {} {}` failed ({}):\n{stdout}\n{}",
            input.display(),
            output.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn assert_converts_in_bounded_memory(input: &Path, output: &Path) {
    let size = std::fs::metadata(input).unwrap().len();
    assert!(size >= FILE as u64, "the input is {size} bytes");
    let started = std::time::Instant::now();
    let peak = convert_peak_rss(input, output);
    eprintln!(
        "ckpt convert {} -> {}: peak {} MiB for {} MiB ({:.1} s, debug build)",
        input.display(),
        output.display(),
        peak >> 20,
        size >> 20,
        started.elapsed().as_secs_f64()
    );
    assert!(
        peak < BOUND,
        "converting {} ({} MiB) to {} peaked at {} MiB of memory (bound: {} MiB)",
        input.display(),
        size >> 20,
        output.display(),
        peak >> 20,
        BOUND >> 20
    );
}

/// The tensors of `path` as (name, dtype, shape, their first and last KiB), sorted by
/// name. (Whole-byte equality of streamed conversions is checked on smaller files by the
/// library's tests; here the point is memory, and the test binary is a debug build.)
fn tensors(path: &Path) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let value = ckpt::format::load(path).unwrap();
    let (sd, _) = ckpt::format::flatten_tensors(&value);
    let mut tensors = sd
        .iter()
        .map(|(name, t)| {
            let bytes = t.contiguous_bytes();
            let ends = [
                &bytes[..bytes.len().min(1024)],
                &bytes[bytes.len().saturating_sub(1024)..],
            ];
            (
                name.to_string(),
                t.dtype().to_string(),
                t.shape().to_vec(),
                ends.concat(),
            )
        })
        .collect::<Vec<_>>();
    tensors.sort();
    tensors
}

#[test]
fn large_torch_and_safetensors_files_convert_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("big.safetensors");
    write_safetensors(&st, 32, FILE / 32);
    let pth = dir.path().join("big.pth");
    torch_from(&st, &pth);

    let st_to_pth = dir.path().join("st_to.pth");
    assert_converts_in_bounded_memory(&st, &st_to_pth);
    let pth_to_pth = dir.path().join("pth_to.pth");
    assert_converts_in_bounded_memory(&pth, &pth_to_pth);
    let pth_to_st = dir.path().join("pth_to.safetensors");
    assert_converts_in_bounded_memory(&pth, &pth_to_st);

    let expected = tensors(&st);
    assert_eq!(expected.len(), 32);
    for out in [&st_to_pth, &pth_to_pth, &pth_to_st] {
        assert!(tensors(out) == expected, "{} differs", out.display());
    }
}

#[test]
fn many_small_tensors_convert_in_bounded_memory() {
    // 16,384 records of 16 KiB: every page of the file holds a zip header, so reading the
    // headers through the map would bring in the whole file.
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("small.safetensors");
    write_safetensors(&st, FILE / (16 << 10), 16 << 10);
    let pth = dir.path().join("small.pth");
    torch_from(&st, &pth);
    let out = dir.path().join("out.pth");
    assert_converts_in_bounded_memory(&pth, &out);
    assert!(tensors(&out) == tensors(&st));
}

#[test]
fn a_large_detectron_pickle_converts_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let pkl = dir.path().join("model_final.pkl");
    let count = 32;
    let len = FILE / count;
    let data: Vec<Vec<u8>> = (0..4).map(|i| noise(len, i)).collect();
    let names: Vec<String> = (0..count).map(|i| format!("res{i}_w")).collect();
    let shape = [len / 4];
    let arrays: Vec<Array> = names
        .iter()
        .enumerate()
        .map(|(i, name)| Array {
            name,
            typestr: "f4",
            big_endian: false,
            shape: &shape,
            fortran: false,
            data: &data[i % 4],
        })
        .collect();
    let mut file = BufWriter::new(File::create(&pkl).unwrap());
    write_numpy_pickle(&mut file, Layout::Py2, &arrays).unwrap();
    file.into_inner().unwrap().sync_all().unwrap();

    let out = dir.path().join("model_final.pth");
    assert_converts_in_bounded_memory(&pkl, &out);
    let out_st = dir.path().join("model_final.safetensors");
    assert_converts_in_bounded_memory(&pkl, &out_st);
    let value = ckpt::format::load(&out).unwrap();
    for (i, name) in names.iter().enumerate() {
        match value.get(name.as_str()) {
            Some(Value::Tensor(t)) => assert!(*t.contiguous_bytes() == data[i % 4][..], "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(tensors(&out_st) == tensors(&out));
}

#[test]
fn a_large_legacy_torch_file_converts_in_bounded_memory() {
    let Some(python) = python::interop_python("legacy conversion memory", "torch") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("legacy.pt");
    // Many storages (a length field on every 16 KiB) and a few large ones.
    let script = format!(
        "import torch\n\
         torch.manual_seed(0)\n\
         state = {{f'small.{{i}}': torch.rand(4096) for i in range(8192)}}\n\
         state.update({{f'big.{{i}}': torch.rand((32 << 20) // 4) for i in range(4)}})\n\
         torch.save(state, {:?}, _use_new_zipfile_serialization=False)\n",
        legacy.display().to_string()
    );
    let status = Command::new(&python)
        .args(["-c", &script])
        .status()
        .expect("python runs");
    assert!(status.success(), "python could not write the legacy file");
    let out = dir.path().join("out.pth");
    assert_converts_in_bounded_memory(&legacy, &out);
    assert!(tensors(&out) == tensors(&legacy));
}
