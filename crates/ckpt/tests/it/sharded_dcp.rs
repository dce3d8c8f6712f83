//! `torch.distributed.checkpoint` directories written by real torch from 1, 2 and 4
//! processes (gloo on CPU; DTensors sharded along different dims, replicated ones, plain
//! tensors, an optimizer state, non-tensor values) read as one checkpoint, equal element for
//! element to what torch's own `dcp_to_torch_save` makes of them; a `.metadata` carrying a
//! code-execution payload is read without running it; broken directories are errors naming
//! the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ckpt::format::{load, load_dcp, load_with, Format, LoadOptions};
use ckpt::walk::leaves;
use ckpt::{Error, Value};

use crate::support::{interop_script, python};

fn dcp_python() -> Option<PathBuf> {
    python::interop_python(
        "the torch.distributed.checkpoint test",
        "torch, torch.distributed",
    )
}

/// A copy of a DCP checkpoint written from `world` processes (`out/dcp`, with torch's
/// conversion of it in `out/reference.pt`): written once per test binary (torch starting
/// `world` processes takes a while), copied for each test, which may break its copy.
fn write_dcp(python: &Path, out: &Path, world: usize) {
    static WRITTEN: OnceLock<Mutex<HashMap<usize, tempfile::TempDir>>> = OnceLock::new();
    let mut written = WRITTEN.get_or_init(Mutex::default).lock().unwrap();
    let source = written.entry(world).or_insert_with(|| {
        let dir = tempfile::tempdir().unwrap();
        let script = interop_script("sharded/dcp_write.py");
        let args = [dir.path().to_str().unwrap(), &world.to_string()];
        assert_eq!(python::run_script_last_line(python, &script, &args), "OK");
        dir
    });
    std::fs::create_dir_all(out.join("dcp")).unwrap();
    std::fs::copy(source.path().join("reference.pt"), out.join("reference.pt")).unwrap();
    for file in std::fs::read_dir(source.path().join("dcp")).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), out.join("dcp").join(file.file_name())).unwrap();
    }
}

/// Every leaf of `value`: its path, and its dtype, shape and bytes (a tensor) or repr.
fn described(value: &Value) -> Vec<(String, String)> {
    leaves(value)
        .map(|leaf| {
            let what = match leaf.value.as_tensor() {
                Some(t) => format!(
                    "{} {:?} {:?}",
                    t.dtype(),
                    t.shape(),
                    t.contiguous_bytes().as_ref()
                ),
                None => leaf.value.short_repr(200),
            };
            (leaf.path_string(), what)
        })
        .collect()
}

fn assert_same_as_torch(out: &Path) {
    let loaded = load_with(out.join("dcp"), &LoadOptions::default()).unwrap();
    assert_eq!(loaded.format, Format::Dcp);
    let reference = load(out.join("reference.pt")).unwrap();
    let ours = described(&loaded.value);
    let theirs = described(&reference);
    assert!(ours.len() > 20, "{ours:?}");
    assert_eq!(ours, theirs);
    // Its `.metadata` names the same checkpoint.
    let again = load(out.join("dcp").join(".metadata")).unwrap();
    assert_eq!(described(&again), theirs);
}

#[test]
fn dcp_from_one_process_reads_as_torch_converts_it() {
    let Some(python) = dcp_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    write_dcp(&python, tmp.path(), 1);
    assert_same_as_torch(tmp.path());
    // Every tensor is in one chunk: a view of the mapped .distcp file, not a copy.
    let value = load(tmp.path().join("dcp")).unwrap();
    for leaf in leaves(&value) {
        if let Some(t) = leaf.value.as_tensor() {
            assert!(t.storage().is_mapped(), "{} is a copy", leaf.path_string());
        }
    }
}

#[test]
fn dcp_from_two_processes_reads_as_torch_converts_it() {
    let Some(python) = dcp_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    write_dcp(&python, tmp.path(), 2);
    assert_same_as_torch(tmp.path());
    // Read for a conversion: sharded tensors are assembled in a temporary file, not in
    // memory, and come back as maps of it, equal all the same.
    let release = LoadOptions::default().with_source_pages(ckpt::format::SourcePages::Release);
    let value = load_with(tmp.path().join("dcp"), &release).unwrap().value;
    let reference = load(tmp.path().join("reference.pt")).unwrap();
    assert_eq!(described(&value), described(&reference));
    let weight = value.get("model").unwrap().get("fc.weight").unwrap();
    assert!(weight.as_tensor().unwrap().storage().is_mapped());
}

#[test]
fn dcp_from_four_processes_reads_as_torch_converts_it_and_in_part() {
    let Some(python) = dcp_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    write_dcp(&python, tmp.path(), 4);
    assert_same_as_torch(tmp.path());

    // Only the model: the same entries as torch's, under the same key.
    let dir = tmp.path().join("dcp");
    let model = load_dcp(&dir, &LoadOptions::default(), Some("model")).unwrap();
    let keys: Vec<String> = model
        .as_dict()
        .unwrap()
        .keys()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(keys, ["model"]);
    let reference = load(tmp.path().join("reference.pt")).unwrap();
    assert_eq!(
        described(model.get("model").unwrap()),
        described(reference.get("model").unwrap())
    );
    // One flattened name.
    let lr = load_dcp(
        &dir,
        &LoadOptions::default(),
        Some("optim.param_groups.0.lr"),
    )
    .unwrap();
    let groups = lr.get("optim").unwrap().get("param_groups").unwrap();
    assert_eq!(
        described(groups),
        [("[0].lr".to_string(), "0.01".to_string())]
    );
    // A key it does not hold lists those it does.
    let err = load_dcp(&dir, &LoadOptions::default(), Some("nope")).unwrap_err();
    assert!(
        matches!(err.root(), Error::MissingKey { available, .. } if available.contains(&"model".to_string()) && available.contains(&"iteration".to_string())),
        "{}",
        err.report()
    );
}

#[test]
fn a_metadata_with_a_code_execution_payload_is_read_without_running_it() {
    let Some(python) = dcp_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    write_dcp(&python, tmp.path(), 2);
    let dir = tmp.path().join("dcp");
    let marker = tmp.path().join("payload-ran");
    let script = interop_script("sharded/dcp_write.py");
    let args = ["hostile", dir.to_str().unwrap(), marker.to_str().unwrap()];
    assert_eq!(python::run_script_last_line(&python, &script, &args), "OK");

    // The payload sits in a field ckpt does not need: the checkpoint reads as before.
    let reference = load(tmp.path().join("reference.pt")).unwrap();
    assert_eq!(described(&load(&dir).unwrap()), described(&reference));
    // As the whole metadata: an error saying what was found, and nothing ran.
    std::fs::rename(dir.join("root.pickle"), dir.join(".metadata")).unwrap();
    let err = load(&dir).unwrap_err();
    let text = err.report().to_string();
    assert!(
        text.contains("system where DCP writes torch.distributed.checkpoint.metadata.Metadata"),
        "{text}"
    );
    assert_eq!(err.path(), Some(dir.join(".metadata").as_path()));
    assert!(!marker.exists(), "the payload ran");

    // Chunks that overlap: an error naming the metadata and the tensor.
    std::fs::rename(dir.join("overlap.pickle"), dir.join(".metadata")).unwrap();
    let err = load(&dir).unwrap_err();
    let text = err.report().to_string();
    assert!(
        text.contains("key 'model.fc.weight'") && text.contains("overlap"),
        "{text}"
    );
    assert_eq!(err.path(), Some(dir.join(".metadata").as_path()));
}

#[test]
fn missing_and_truncated_chunk_files_are_errors_naming_them() {
    let Some(python) = dcp_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    write_dcp(&python, tmp.path(), 2);
    let dir = tmp.path().join("dcp");
    let rank1 = dir.join("__1_0.distcp");
    let bytes = std::fs::read(&rank1).unwrap();
    std::fs::write(&rank1, &bytes[..bytes.len() / 2]).unwrap();
    let err = load(&dir).unwrap_err();
    assert_eq!(err.path(), Some(rank1.as_path()), "{}", err.report());
    assert!(
        matches!(err.root(), Error::Truncated { .. }),
        "{}",
        err.report()
    );
    std::fs::remove_file(&rank1).unwrap();
    let err = load(&dir).unwrap_err();
    assert_eq!(err.path(), Some(rank1.as_path()), "{}", err.report());
}
