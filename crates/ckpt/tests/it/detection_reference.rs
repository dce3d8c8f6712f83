//! detectron2's own checkpoint tests, rewritten: a nested model loading a flat state dict by
//! name matching (with and without a `module.` wrapper), a plain load versus
//! `?matching_heuristics=True`, and a custom path handler.

use std::path::{Path, PathBuf};

use ckpt::format::{save_torch, SaveOptions};
use ckpt::matching::align_and_update_state_dicts;
use ckpt::resolve::{Lookup, PathHandler, Resolver};
use ckpt::DetectionCheckpointer;
use ckpt::{Shared, StateDict, StateDictModel};
use tracing::Level;

use crate::support::{at, captured, counting, values, zero_model};

/// The reference's "complex model": `block1.layer1` (2 -> 3), `layer2` (3 -> 2) and
/// `res.layer2` (3 -> 2), under `prefix` (`module.` for a wrapped model).
fn complex_model(prefix: &str) -> Shared<StateDictModel> {
    let names = [
        ("block1.layer1.weight", vec![3, 2]),
        ("block1.layer1.bias", vec![3]),
        ("layer2.weight", vec![2, 3]),
        ("layer2.bias", vec![2]),
        ("res.layer2.weight", vec![2, 3]),
        ("res.layer2.bias", vec![2]),
    ];
    let names: Vec<(String, Vec<usize>)> = names
        .into_iter()
        .map(|(n, s)| (format!("{prefix}{n}"), s))
        .collect();
    zero_model(names.iter().map(|(n, s)| (n.as_str(), s.as_slice())))
}

/// The flat state dict the reference loads into it, with distinct values per entry.
fn flat_state_dict() -> StateDict {
    let mut sd = StateDict::new();
    sd.insert("layer1.weight", counting(100.0, &[3, 2]));
    sd.insert("layer1.bias", counting(200.0, &[3]));
    sd.insert("layer2.weight", counting(300.0, &[2, 3]));
    sd.insert("layer2.bias", counting(400.0, &[2]));
    sd.insert("res.layer2.weight", counting(500.0, &[2, 3]));
    sd.insert("res.layer2.bias", counting(600.0, &[2]));
    sd
}

fn expected_pairs(prefix: &str) -> Vec<(String, &'static str)> {
    [
        ("block1.layer1.weight", "layer1.weight"),
        ("block1.layer1.bias", "layer1.bias"),
        ("layer2.weight", "layer2.weight"),
        ("layer2.bias", "layer2.bias"),
        ("res.layer2.weight", "res.layer2.weight"),
        ("res.layer2.bias", "res.layer2.bias"),
    ]
    .into_iter()
    .map(|(m, c)| (format!("{prefix}{m}"), c))
    .collect()
}

fn save_flat(dir: &Path) -> PathBuf {
    let path = dir.join("flat.pth");
    save_torch(
        &path,
        &flat_state_dict().to_value(),
        &SaveOptions::default(),
    )
    .unwrap();
    path
}

fn local(model: &Shared<StateDictModel>) -> DetectionCheckpointer {
    DetectionCheckpointer::new(model.clone(), "").with_resolver(Resolver::local_only())
}

#[test]
fn complex_model_takes_the_longest_matching_names_with_and_without_module_wrapper() {
    for prefix in ["", "module."] {
        let model = complex_model(prefix);
        let shapes = model
            .lock()
            .unwrap()
            .tensors()
            .iter()
            .map(|(n, t)| (n.to_string(), t.shape().to_vec()))
            .collect::<Vec<_>>();
        let stored = flat_state_dict();
        let aligned = align_and_update_state_dicts(&shapes, stored.clone(), false).unwrap();
        for (model_key, ckpt_key) in expected_pairs(prefix) {
            let loaded = aligned.state_dict.get(&model_key).unwrap();
            let original = stored.get(ckpt_key).unwrap();
            // Moved, not copied: the same storage as the checkpoint's tensor.
            assert!(loaded.storage().same_as(original.storage()), "{model_key}");
            assert!(loaded.data_eq(original), "{model_key}");
        }
    }
}

#[test]
fn nested_model_loads_a_flat_file_by_name_matching_through_the_checkpointer() {
    let dir = tempfile::tempdir().unwrap();
    let path = save_flat(dir.path());
    for prefix in ["", "module."] {
        let model = complex_model(prefix);
        let query = format!("{}?matching_heuristics=True", path.display());
        let (result, lines) = captured(|| local(&model).load(&query, ckpt::Checkpointables::All));
        result.unwrap();
        let flat = flat_state_dict();
        for (model_key, ckpt_key) in expected_pairs(prefix) {
            let want = flat.get(ckpt_key).unwrap().to_vec::<f32>().unwrap();
            assert_eq!(values(&model, &model_key), want, "{model_key}");
        }
        assert!(at(&lines, Level::WARN).is_empty(), "{lines:#?}");
    }
}

#[test]
fn plain_load_matches_exact_names_only_and_the_query_turns_matching_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = save_flat(dir.path());
    let model = complex_model("");
    let (result, lines) =
        captured(|| local(&model).load(path.to_str().unwrap(), ckpt::Checkpointables::All));
    result.unwrap();
    // Exact names: layer2.* and res.layer2.* load, block1.layer1.* does not.
    assert_eq!(values(&model, "layer2.bias"), vec![400.0, 401.0]);
    assert_eq!(values(&model, "res.layer2.bias"), vec![600.0, 601.0]);
    assert_eq!(values(&model, "block1.layer1.bias"), vec![0.0; 3]);
    let warnings = at(&lines, Level::WARN);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("not found in the checkpoint")
                && w.contains("block1.layer1.{bias, weight}")),
        "{warnings:#?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("not used by the model") && w.contains("layer1.{bias, weight}")),
        "{warnings:#?}"
    );

    let with_query = format!("{}?matching_heuristics=True", path.display());
    local(&model)
        .load(&with_query, ckpt::Checkpointables::All)
        .unwrap();
    assert_eq!(
        values(&model, "block1.layer1.bias"),
        vec![200.0, 201.0, 202.0]
    );

    let err = local(&model)
        .load(
            &format!("{}?matching=True", path.display()),
            ckpt::Checkpointables::All,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Unsupported query remaining: matching=True"),
        "{err}"
    );
}

/// A user's prefix: `zoo://NAME` is `NAME.pth` in a directory.
struct Zoo(PathBuf);

impl PathHandler for Zoo {
    fn prefixes(&self) -> Vec<String> {
        vec!["zoo://".to_string()]
    }
    fn get_local_path(&self, path: &str, _: &Lookup<'_>) -> ckpt::Result<PathBuf> {
        let name = path.strip_prefix("zoo://").unwrap_or(path);
        Ok(self.0.join(format!("{name}.pth")))
    }
}

#[test]
fn custom_path_handler_resolves_its_prefix_and_keeps_the_query() {
    let dir = tempfile::tempdir().unwrap();
    save_flat(dir.path());
    let model = complex_model("");
    let mut checkpointer = local(&model);
    checkpointer
        .resolver_mut()
        .register(Zoo(dir.path().to_path_buf()));
    checkpointer
        .load(
            "zoo://flat?matching_heuristics=True",
            ckpt::Checkpointables::All,
        )
        .unwrap();
    assert_eq!(
        values(&model, "block1.layer1.bias"),
        vec![200.0, 201.0, 202.0]
    );
    let err = checkpointer
        .load("zoo://absent", ckpt::Checkpointables::All)
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.pth"), "{err}");
}
