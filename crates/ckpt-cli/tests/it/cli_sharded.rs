//! `ckpt convert --max-shard-size` writes Hugging Face sharded safetensors; a sharded
//! checkpoint (its directory or its index) is an input of `inspect` and `convert` like a file.

use std::path::Path;

use crate::support::{ckpt, entries, fixture, inspect_json, one_line_error, success};

fn convert(input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "convert".into(),
        input.as_os_str().to_owned(),
        output.as_os_str().to_owned(),
    ];
    args.extend(extra.iter().map(Into::into));
    ckpt(&args)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn max_shard_size_writes_shards_that_read_back_as_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("model.safetensors");
    success(&convert(
        &fixture("train_state.pth"),
        &single,
        &["--key", "model"],
    ));
    let shards = dir.path().join("shards");
    // The model's tensors are 24 and 12 bytes: 30 bytes puts each in a shard of its own.
    success(&convert(&single, &shards, &["--max-shard-size", "30"]));
    let names = names_in(&shards);
    assert_eq!(names.last().unwrap(), "model.safetensors.index.json");
    assert!(names.len() >= 3, "{names:?}");
    assert!(names[0].starts_with("model-00001-of-0000"), "{names:?}");

    // Inspect reads the directory and the index as one checkpoint.
    let before = inspect_json(&single);
    for input in [shards.clone(), shards.join("model.safetensors.index.json")] {
        let report = inspect_json(&input);
        assert_eq!(report["format"], "hf-sharded");
        assert_eq!(entries(&report), entries(&before));
    }
    // And converts it back to one file.
    let back = dir.path().join("back.safetensors");
    success(&convert(&shards, &back, &[]));
    assert_eq!(entries(&inspect_json(&back)), entries(&before));
}

#[test]
fn max_shard_size_refuses_a_torch_output_and_bad_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("tensors.safetensors");
    let line = one_line_error(&convert(
        &input,
        &dir.path().join("out.pth"),
        &["--max-shard-size", "1MB"],
    ));
    assert!(line.contains("not a torch file"), "{line}");
    for bad in ["0", "lots", "1.5GB"] {
        let out = convert(&input, &dir.path().join("out"), &["--max-shard-size", bad]);
        assert!(!out.status.success(), "{bad}");
    }
    assert!(names_in(dir.path()).is_empty());
}
