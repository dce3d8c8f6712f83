//! `ckpt inspect`: every tensor and every other value of real files, with totals.

use serde_json::json;

use crate::support::{ckpt, entry, fixture, inspect_json, success};

#[test]
fn training_state_lists_tensors_and_values_by_path() {
    let report = inspect_json(&fixture("train_state.pth"));
    assert_eq!(report["format"], "torch-zip");

    let weight = entry(&report, json!(["model", "0.weight"]));
    assert_eq!(weight["kind"], "tensor");
    assert_eq!(weight["type"], "Tensor");
    assert_eq!(weight["dtype"], "float32");
    assert_eq!(weight["shape"], json!([3, 2]));
    assert_eq!(weight["bytes"], 24);
    assert_eq!(weight["contiguous"], true);

    let batches = entry(&report, json!(["model", "1.num_batches_tracked"]));
    assert_eq!(batches["dtype"], "int64");
    assert_eq!(batches["shape"], json!([]));
    assert_eq!(batches["bytes"], 8);

    // Optimizer state is keyed by int parameter ids: numbers in the path.
    let momentum = entry(&report, json!(["optimizer", "state", 0, "momentum_buffer"]));
    assert_eq!(momentum["kind"], "tensor");
    assert_eq!(momentum["shape"], json!([3, 2]));
    let lr = entry(&report, json!(["optimizer", "param_groups", 0, "lr"]));
    assert_eq!(lr["kind"], "value");
    assert_eq!(lr["type"], "float");
    assert_eq!(lr["repr"], "0.1");
    assert_eq!(lr["opaque"], false);
    let nesterov = entry(&report, json!(["optimizer", "param_groups", 0, "nesterov"]));
    assert_eq!(nesterov["repr"], "False");
    let param = entry(
        &report,
        json!(["optimizer", "param_groups", 0, "params", 3]),
    );
    assert_eq!(param["repr"], "3");

    assert!(entry(&report, json!(["tied", "weight_t"]))["contiguous"] == false);
    assert_eq!(entry(&report, json!(["iteration"]))["repr"], "7");
    assert_eq!(entry(&report, json!(["meta", "tags", 1]))["repr"], "\"b\"");
    assert_eq!(entry(&report, json!(["meta", "none"]))["type"], "NoneType");
    // An empty container is an entry of its own, so nothing is lost.
    let empty = entry(&report, json!(["meta", "empty"]));
    assert_eq!(
        (&empty["type"], &empty["repr"]),
        (&json!("dict"), &json!("{}"))
    );
}

#[test]
fn totals_count_a_shared_storage_once() {
    let report = inspect_json(&fixture("train_state.pth"));
    let totals = &report["totals"];
    // 7 module entries, 4 momentum buffers, a tensor and its transpose.
    assert_eq!(totals["tensors"], 13);
    assert_eq!(totals["storages"], 12);
    let tensor_bytes = totals["tensor_bytes"].as_u64().unwrap();
    assert_eq!(totals["storage_bytes"].as_u64().unwrap(), tensor_bytes - 24);
    assert_eq!(totals["opaque"], 0);
}

#[test]
fn unknown_globals_are_listed_as_opaque() {
    let report = inspect_json(&fixture("opaque.pth"));
    let args = entry(&report, json!(["args"]));
    assert_eq!(args["kind"], "value");
    assert_eq!(args["type"], "argparse.Namespace");
    assert_eq!(args["opaque"], true);
    assert_eq!(report["totals"]["opaque"], 1);

    let table = success(&ckpt(&[
        "inspect".as_ref(),
        fixture("opaque.pth").as_os_str(),
    ]));
    let row = table.lines().find(|l| l.starts_with("args ")).unwrap();
    assert!(
        row.contains("argparse.Namespace") && row.contains("opaque"),
        "{table}"
    );
}

#[test]
fn detectron_pickle_shows_numpy_arrays() {
    let report = inspect_json(&fixture("detectron.pkl"));
    assert_eq!(report["format"], "pickle");
    let conv = entry(&report, json!(["blobs", "conv1_w"]));
    assert_eq!(conv["type"], "numpy.ndarray");
    assert_eq!(conv["dtype"], "float32");
    assert_eq!(conv["shape"], json!([2, 1, 2, 2]));
    assert_eq!(conv["bytes"], 32);
    assert_eq!(entry(&report, json!(["__author__"]))["type"], "str");
}

#[test]
fn safetensors_file_shows_its_tensors() {
    let report = inspect_json(&fixture("tensors.safetensors"));
    assert_eq!(report["format"], "safetensors");
    assert_eq!(entry(&report, json!(["a.bias"]))["dtype"], "float16");
    assert_eq!(entry(&report, json!(["a.weight"]))["shape"], json!([2, 2]));
    assert_eq!(report["totals"]["values"], 0);
}

#[test]
fn table_for_people_names_paths_and_totals() {
    let table = success(&ckpt(&[
        "inspect".as_ref(),
        fixture("train_state.pth").as_os_str(),
    ]));
    assert!(table.contains("format:  torch-zip"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("optimizer.state[0].momentum_buffer "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("float32") && row.contains("[3, 2]") && row.contains("24 B"),
        "{row}"
    );
    assert!(table.contains("optimizer.param_groups[0].lr"), "{table}");
    assert!(table.contains("totals:  13 tensors"), "{table}");
}

#[test]
fn a_model_saved_whole_lists_its_parameters_and_their_state_dict_names() {
    let report = inspect_json(&fixture("full_model.pt"));
    assert_eq!(report["totals"]["tensors"], 7);
    let weight = entry(
        &report,
        json!(["model", {"attr": "_modules"}, "0", {"attr": "_parameters"}, "weight"]),
    );
    assert_eq!(weight["type"], "Parameter");
    assert_eq!(weight["shape"], json!([3, 2]));
    assert_eq!(weight["state_dict_name"], "model.0.weight");
    let steps = entry(
        &report,
        json!(["model", {"attr": "_modules"}, "1", {"attr": "_buffers"}, "num_batches_tracked"]),
    );
    assert_eq!(steps["state_dict_name"], "model.1.num_batches_tracked");
    assert_eq!(
        report["modules"],
        json!([{"path": ["model"], "type": "torch.nn.modules.container.Sequential", "state_dict_entries": 7}])
    );
    // Opaque objects are listed (never executed), then what they hold.
    let model = entry(&report, json!(["model"]));
    assert_eq!(model["opaque"], true);
    assert_eq!(
        entry(&report, json!(["args", {"attr": "lr"}]))["repr"],
        "0.1"
    );

    let table = success(&ckpt(&[
        "inspect".as_ref(),
        fixture("full_model.pt").as_os_str(),
    ]));
    let row = table
        .lines()
        .find(|l| l.starts_with("model._modules.0._parameters.weight "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("state dict: model.0.weight"), "{table}");
    assert!(table.contains("totals:  7 tensors"), "{table}");
}

/// A 3 KB pickle whose 100-int list is wrapped 190 levels deep and that wrapping shared 30
/// times through the memo (as many copies as the reader makes of a sub-tree of 290 values in
/// a pickle this small): a listing of every leaf would print 3,000 paths of 190 steps. The
/// repeated sub-tree is listed once; each later place is one entry naming where its contents
/// are listed.
#[test]
fn a_sub_tree_shared_deep_down_is_listed_once() {
    let mut pickle = b"\x80\x02](".to_vec();
    for i in 0..100u8 {
        pickle.extend_from_slice(&[b'K', i]);
    }
    pickle.extend_from_slice(b"er\x00\x00\x00\x00");
    for level in 1..=190u32 {
        pickle.extend_from_slice(b"0]j");
        pickle.extend_from_slice(&(level - 1).to_le_bytes());
        pickle.extend_from_slice(b"ar");
        pickle.extend_from_slice(&level.to_le_bytes());
    }
    pickle.extend_from_slice(b"0](");
    for _ in 0..30 {
        pickle.push(b'j');
        pickle.extend_from_slice(&190u32.to_le_bytes());
    }
    pickle.extend_from_slice(b"e.");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shared.pkl");
    std::fs::write(&file, &pickle).unwrap();
    let report = inspect_json(&file);
    let entries = report["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 100 + 29, "{} entries", entries.len());
    assert_eq!(entries[100]["same_as"], "[0]");
    assert_eq!(report["totals"]["values"], 3_000);
}
