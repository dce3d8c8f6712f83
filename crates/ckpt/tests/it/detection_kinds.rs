//! DetectionCheckpointer reads each kind of file as detectron2 does: model-zoo pickles,
//! pycls `.pyth`, torch files with or without `model`, safetensors, and URLs.

use ckpt::detection::read_detection_file;
use ckpt::format::{save_safetensors, save_torch, SaveOptions};
use ckpt::resolve::Resolver;
use ckpt::DetectionCheckpointer;
use ckpt::{Dict, StateDict, Value};
use tracing::Level;

use crate::support::{at, captured, counting, fixture, values, zero_model};

fn local(model: &ckpt::Shared<ckpt::StateDictModel>) -> DetectionCheckpointer {
    DetectionCheckpointer::new(model.clone(), "").with_resolver(Resolver::local_only())
}

#[test]
fn model_zoo_pickle_is_used_as_is_and_names_its_author() {
    let (checkpoint, lines) =
        captured(|| read_detection_file(&fixture("d2_model_zoo.pkl"), false).unwrap());
    assert!(at(&lines, Level::INFO).contains(&"Reading a file from 'torchvision'"));
    assert_eq!(
        checkpoint.get("__author__").and_then(Value::as_str),
        Some("torchvision")
    );
    assert_eq!(
        checkpoint
            .get("matching_heuristics")
            .and_then(Value::as_bool),
        Some(true)
    );
    let model = checkpoint.get("model").unwrap().as_dict().unwrap();
    // Used as is: even num_batches_tracked stays.
    assert!(model
        .get("backbone.conv1.norm.num_batches_tracked")
        .is_some());
}

#[test]
fn pycls_file_loads_model_state_without_batch_counters_by_name_matching() {
    let path = fixture("pycls_like.pyth");
    let checkpoint = read_detection_file(&path, false).unwrap();
    assert_eq!(
        checkpoint.get("__author__").and_then(Value::as_str),
        Some("pycls")
    );
    let state = checkpoint.get("model").unwrap().as_dict().unwrap();
    let keys: Vec<String> = state.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(
        keys,
        [
            "0.weight",
            "0.bias",
            "1.weight",
            "1.bias",
            "1.running_mean",
            "1.running_var"
        ]
    );

    let model = zero_model([
        ("stem.0.weight", &[2usize, 3][..]),
        ("stem.0.bias", &[2][..]),
        ("stem.1.weight", &[2][..]),
        ("stem.1.bias", &[2][..]),
        ("stem.1.running_mean", &[2][..]),
        ("stem.1.running_var", &[2][..]),
    ]);
    let (result, lines) =
        captured(|| local(&model).load(path.to_str().unwrap(), ckpt::Checkpointables::None));
    let extra = result.unwrap();
    assert!(at(&lines, Level::WARN).is_empty(), "{lines:#?}");
    assert_eq!(
        extra.get("__author__").and_then(Value::as_str),
        Some("pycls")
    );
    let stored = state.get("1.running_var").unwrap().as_tensor().unwrap();
    assert_eq!(
        values(&model, "stem.1.running_var"),
        stored.to_vec::<f32>().unwrap()
    );
}

#[test]
fn pycls_file_without_model_state_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.pyth");
    let mut d = Dict::new();
    d.insert("epoch", Value::Int(3));
    save_torch(&path, &Value::Dict(d), &SaveOptions::default()).unwrap();
    let model = zero_model([("w", &[1usize][..])]);
    let err = local(&model)
        .load(path.to_str().unwrap(), ckpt::Checkpointables::All)
        .unwrap_err();
    assert!(
        matches!(err.root(), ckpt::Error::MissingKey { key, available }
            if key == "model_state" && available == &["epoch"]),
        "{err:?}"
    );
    assert_eq!(err.path(), Some(path.as_path()));
}

#[test]
fn torch_file_with_model_entry_returns_extras_and_hides_cell_anchors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model_final.pth");
    let mut sd = StateDict::new();
    sd.insert("backbone.w", counting(1.0, &[2]));
    sd.insert(
        "proposal_generator.anchor_generator.cell_anchors.0",
        counting(0.0, &[3, 4]),
    );
    let mut d = Dict::new();
    d.insert("model", sd.to_value());
    d.insert("iteration", Value::Int(89999));
    save_torch(&path, &Value::Dict(d), &SaveOptions::default()).unwrap();

    let model = zero_model([
        ("backbone.w", &[2usize][..]),
        ("pixel_mean", &[3][..]),
        ("head.b", &[1][..]),
    ]);
    let (result, lines) =
        captured(|| local(&model).load(path.to_str().unwrap(), ckpt::Checkpointables::All));
    let extra = result.unwrap();
    assert_eq!(extra.get("iteration").and_then(Value::as_int), Some(89999));
    assert_eq!(values(&model, "backbone.w"), vec![1.0, 2.0]);
    let warnings = at(&lines, Level::WARN);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("head.b") && !warnings[0].contains("pixel_mean"),
        "{}",
        warnings[0]
    );
}

#[test]
fn safetensors_and_module_wrapped_files_load_with_matching_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.safetensors");
    let mut sd = StateDict::new();
    sd.insert("module.layer1.weight", counting(10.0, &[2]));
    sd.insert("module.head.bias", counting(20.0, &[1]));
    save_safetensors(&path, &sd, None).unwrap();
    let model = zero_model([
        ("backbone.layer1.weight", &[2usize][..]),
        ("roi.head.bias", &[1][..]),
    ]);
    // The `module.` prefix of a model saved while wrapped is removed before matching.
    local(&model)
        .load(
            &format!("{}?matching_heuristics=True", path.display()),
            ckpt::Checkpointables::All,
        )
        .unwrap();
    assert_eq!(values(&model, "backbone.layer1.weight"), vec![10.0, 11.0]);
    assert_eq!(values(&model, "roi.head.bias"), vec![20.0]);
}

#[test]
fn ambiguous_matches_fail_the_load_and_leave_the_model_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.pth");
    let mut sd = StateDict::new();
    sd.insert("weight", counting(1.0, &[2]));
    save_torch(&path, &sd.to_value(), &SaveOptions::default()).unwrap();
    let model = zero_model([("a.weight", &[2usize][..]), ("b.weight", &[2][..])]);
    let err = local(&model)
        .load(
            &format!("{}?matching_heuristics=True", path.display()),
            ckpt::Checkpointables::All,
        )
        .unwrap_err();
    assert!(
        matches!(err.root(), ckpt::Error::Invalid { message }
            if message.contains("Ambiguity found for weight in checkpoint!")),
        "{err:?}"
    );
    assert_eq!(values(&model, "a.weight"), vec![0.0, 0.0]);
}

/// Loading through the HTTP cache, from a server on 127.0.0.1 started by the test.
#[cfg(feature = "http")]
mod over_http {
    use ckpt::resolve::{HttpCache, Resolver};
    use ckpt::DetectionCheckpointer;

    use crate::support::http::{refused_url, Reply, Server};
    use crate::support::paths::files_under;
    use crate::support::{fixture, values, zero_model};

    #[test]
    fn caffe2_weights_load_from_a_url_once_into_the_cache() {
        let body = std::fs::read(fixture("detection/faster_rcnn_c2.pkl")).unwrap();
        let server = Server::start();
        let url = server.route("/detectron/R-50-FPN.pkl", Reply::Body(body));
        let cache = tempfile::tempdir().unwrap();
        let model = zero_model([(
            "backbone.bottom_up.stem.conv1.weight",
            &[4usize, 3, 1, 1][..],
        )]);
        let checkpointer = DetectionCheckpointer::new(model.clone(), "")
            .with_resolver(Resolver::with_cache(HttpCache::new(cache.path())));
        checkpointer.load(&url, ckpt::Checkpointables::All).unwrap();
        let want: Vec<f32> = (0..12).map(|i| i as f32).collect();
        assert_eq!(values(&model, "backbone.bottom_up.stem.conv1.weight"), want);
        // The second load reads the cached file.
        checkpointer.load(&url, ckpt::Checkpointables::All).unwrap();
        assert_eq!(server.requests(), 1);
    }

    #[test]
    fn the_plain_checkpointer_loads_a_url_through_the_cache_too() {
        let saved = tempfile::tempdir().unwrap();
        let trained = zero_model([("w", &[3usize][..])]);
        trained.lock().unwrap().set(
            "w",
            ckpt::Tensor::from_slice(&[1.0f32, 2.0, 3.0], &[3]).unwrap(),
        );
        ckpt::Checkpointer::new(trained, saved.path())
            .save("model_final", ckpt::Dict::new())
            .unwrap();
        let server = Server::start();
        let url = server.route(
            "/run/model_final.pth",
            Reply::Body(std::fs::read(saved.path().join("model_final.pth")).unwrap()),
        );

        let cache = tempfile::tempdir().unwrap();
        let model = zero_model([("w", &[3usize][..])]);
        let checkpointer = ckpt::Checkpointer::new(model.clone(), "")
            .with_resolver(Resolver::with_cache(HttpCache::new(cache.path())));
        let report = checkpointer
            .load_with_report(url, ckpt::Checkpointables::All)
            .unwrap();
        assert_eq!(report.loaded, vec!["w"]);
        assert_eq!(values(&model, "w"), vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn refused_download_is_an_error_naming_the_url_and_caches_nothing() {
        let cache = tempfile::tempdir().unwrap();
        let model = zero_model([("w", &[1usize][..])]);
        let checkpointer = DetectionCheckpointer::new(model, "")
            .with_resolver(Resolver::with_cache(HttpCache::new(cache.path())));
        let url = refused_url("/model_final.pkl");
        let err = checkpointer
            .load(&url, ckpt::Checkpointables::All)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&url), "{err}");
        let left = files_under(cache.path());
        assert!(left.is_empty(), "{left:?}");
    }
}
