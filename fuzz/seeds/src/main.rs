//! `ckpt-fuzz-seeds REPO_ROOT OUT_DIR` writes the starting corpus of each fuzz target under
//! `OUT_DIR/<target>/`: every checkpoint among the repository's test fixtures, files ckpt
//! writes itself (torch zip archives and safetensors files of assorted values, and each
//! fixture written again), and for the focused targets the part they take: the pickles
//! (plain pickle files and the `data.pkl` of archives), the safetensors headers, the legacy
//! streams.

use std::path::{Path, PathBuf};

use ckpt::format::{
    detect, flatten_tensors, load_bytes, write_safetensors, write_torch, Format, LoadOptions,
    SaveOptions,
};
use ckpt::{DType, Dict, StateDict, Tensor, Value};

/// Named files (the name is the corpus file's).
type Files = Vec<(String, Vec<u8>)>;

/// The directories of test fixtures, relative to the repository's root.
const FIXTURE_DIRS: &[&str] = &["tests/fixtures", "crates/ckpt-cli/tests/fixtures"];

/// Files of these kinds in the fixture directories are not checkpoints.
const NOT_CHECKPOINTS: &[&str] = &["json", "py", "md", "txt", "sh"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, root, out] = args.as_slice() else {
        return Err("usage: ckpt-fuzz-seeds REPO_ROOT OUT_DIR".into());
    };
    let root = Path::new(root);
    let out = Path::new(out);
    let mut files: Files = Vec::new();
    for dir in FIXTURE_DIRS {
        collect(&root.join(dir), dir, &mut files)?;
    }
    let rewritten: Files = files
        .iter()
        .filter_map(|(name, bytes)| {
            let loaded = load_bytes(bytes.clone(), &LoadOptions::default()).ok()?;
            Some((format!("rewritten_{name}"), torch_bytes(&loaded.value)?))
        })
        .collect();
    files.extend(rewritten);
    files.extend(written_by_ckpt()?);

    let mut count = 0;
    for (name, bytes) in &files {
        let format = detect(bytes).ok();
        write(out, "load_bytes", name, bytes)?;
        write(out, "load_file", name, bytes)?;
        match format {
            Some(Format::TorchLegacy | Format::TorchTar) => write(out, "legacy", name, bytes)?,
            Some(Format::Pickle) => write(out, "pickle", name, bytes)?,
            Some(Format::Safetensors) => {
                write(out, "safetensors", name, bytes)?;
                let n = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
                write(
                    out,
                    "safetensors",
                    &format!("header_{name}"),
                    &bytes[8..8 + n],
                )?;
            }
            Some(Format::TorchZip) => {
                if let Some(pickle) = stored_record(bytes, "data.pkl") {
                    write(out, "pickle", &format!("data_pkl_{name}"), pickle)?;
                }
            }
            _ => {}
        }
        count += 1;
    }
    eprintln!("ckpt-fuzz-seeds: {count} files under {}", out.display());
    Ok(())
}

/// Every checkpoint file under `dir` (recursively), named after its path.
fn collect(dir: &Path, label: &str, files: &mut Files) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        let file_name = path.file_name().unwrap_or_default().to_string_lossy();
        let name = format!("{label}/{file_name}");
        if path.is_dir() {
            collect(&path, &name, files)?;
            continue;
        }
        let ext = path.extension().unwrap_or_default().to_string_lossy();
        if NOT_CHECKPOINTS.contains(&ext.as_ref()) || file_name == "last_checkpoint" {
            continue;
        }
        files.push((name.replace(['/', '.'], "_"), std::fs::read(&path)?));
    }
    Ok(())
}

fn write(out: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = out.join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), bytes)
}

/// `value` as a torch zip archive, when it can be written.
fn torch_bytes(value: &Value) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    let options = SaveOptions::default().with_archive_name("seed");
    write_torch(&mut bytes, value, &options).ok()?;
    Some(bytes)
}

/// Torch archives and safetensors files ckpt writes of assorted values.
fn written_by_ckpt() -> Result<Files, Box<dyn std::error::Error>> {
    let mut sd = StateDict::new();
    let dtypes = [
        DType::Float32,
        DType::Float16,
        DType::BFloat16,
        DType::Float64,
        DType::Int64,
        DType::Int8,
        DType::UInt8,
        DType::Bool,
        DType::Complex64,
    ];
    for (i, dtype) in dtypes.into_iter().enumerate() {
        let shape: &[usize] = match i % 3 {
            0 => &[2, 3],
            1 => &[4],
            _ => &[],
        };
        let n: usize = shape.iter().product::<usize>() * dtype.size();
        let bytes = (0..n).map(|b| b as u8).collect();
        sd.insert(
            format!("layer{i}.{}", dtype.name()),
            Tensor::from_bytes(dtype, shape, bytes)?,
        );
    }
    let whole = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    let transposed = whole.view(&[3, 2], &[1, 3], 0)?;
    let tail = whole.view(&[2], &[1], 4)?;
    let mut views = Dict::new();
    views.insert("whole", Value::Tensor(whole));
    views.insert("transposed", Value::Tensor(transposed));
    views.insert("tail", Value::Tensor(tail));
    views.insert(
        "empty",
        Value::Tensor(Tensor::zeros(DType::Float32, &[0, 4])?),
    );

    let mut train = Dict::new();
    train.insert("model", sd.clone().to_value());
    train.insert("iteration", Value::Int(1234));
    train.insert("lr", Value::Float(0.01));
    train.insert("name", Value::Str("run".into()));
    train.insert(
        "milestones",
        Value::List(vec![Value::Int(10), Value::Int(20), Value::None]),
    );
    train.insert("flag", Value::Bool(true));

    let mut files = Vec::new();
    for (name, value) in [
        ("state_dict", sd.clone().to_value()),
        ("views", Value::Dict(views)),
        ("training_state", Value::Dict(train)),
    ] {
        if let Some(bytes) = torch_bytes(&value) {
            files.push((format!("ckpt_{name}_pt"), bytes));
        }
        let (tensors, _) = flatten_tensors(&value);
        let mut bytes = Vec::new();
        if write_safetensors(&mut bytes, &tensors, None).is_ok() {
            files.push((format!("ckpt_{name}_safetensors"), bytes));
        }
    }
    Ok(files)
}

/// The bytes of the stored record whose name ends with `suffix`, found by walking the
/// local headers from the start of a zip archive.
fn stored_record<'a>(zip: &'a [u8], suffix: &str) -> Option<&'a [u8]> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(zip.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(zip.get(at..at + 4)?.try_into().ok()?));
    let mut at = 0;
    while u32_at(at)? == 0x0403_4b50 {
        let size = u32_at(at + 18)? as usize;
        let name_len = usize::from(u16_at(at + 26)?);
        let extra_len = usize::from(u16_at(at + 28)?);
        let name = zip.get(at + 30..at + 30 + name_len)?;
        let data_at = at + 30 + name_len + extra_len;
        let data = zip.get(data_at..data_at + size)?;
        if name.ends_with(suffix.as_bytes()) {
            return Some(data);
        }
        at = data_at + size;
    }
    None
}
