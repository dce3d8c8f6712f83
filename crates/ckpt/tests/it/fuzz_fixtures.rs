//! Seeded mutations of the committed fixtures: loading a damaged file returns an error or a
//! value, never panics, whether read directly or through the DetectionCheckpointer.

use std::panic::{catch_unwind, AssertUnwindSafe};

use ckpt::format::{
    flatten_tensors, load_bytes, write_safetensors, write_torch, LoadOptions, SaveOptions,
};
use ckpt::resolve::Resolver;
use std::path::Path;

use ckpt::DetectionCheckpointer;
use ckpt::{DType, StateDict, Tensor};

use crate::support::fixture;
use crate::support::rng::Rng;

const FIXTURES: &[&str] = &[
    "d2_model_zoo.pkl",
    "d2_model_zoo_p2.pkl",
    "detectron1_py2.pkl",
    "dtypes.pt",
    "legacy.pt",
    "legacy_p1.pt",
    "misc.pt",
    "module_sd.pt",
    "numpy_p5.pkl",
    "optim.pt",
    "plain_p0.pkl",
    "plain_p1.pkl",
    "plain_p3.pkl",
    "proto4.pt",
    "pycls_like.pyth",
    "views.pt",
    "writer/sd_plain.safetensors",
    "detection/faster_rcnn_c2.pkl",
];

const INTERESTING: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, 0xfe, b'(', b'.', b'0', b'9'];

fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..1 + rng.below(4) {
        if out.is_empty() {
            break;
        }
        let at = rng.below(out.len());
        match rng.below(6) {
            0 => out[at] ^= 1 << rng.below(8),
            1 => out[at] = INTERESTING[rng.below(INTERESTING.len())],
            2 => out.truncate(at),
            3 => {
                out.remove(at);
            }
            4 => out.insert(at, rng.next_u64() as u8),
            _ => {
                // A multi-byte integer field set to an extreme value.
                let end = (at + 4).min(out.len());
                let fill = if rng.below(2) == 0 { 0xff } else { 0x7f };
                out[at..end].fill(fill);
            }
        }
    }
    out
}

/// Rounds per fixture and seed; `CKPT_FUZZ_ROUNDS` / `CKPT_FUZZ_SEED` run a longer or
/// different pass by hand.
fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn panics(f: impl FnOnce()) -> bool {
    catch_unwind(AssertUnwindSafe(f)).is_err()
}

#[test]
fn mutated_fixtures_never_panic_the_reader() {
    let mut rng = Rng(setting("CKPT_FUZZ_SEED", 0x5eed_1234_abcd_0001));
    let rounds = setting("CKPT_FUZZ_ROUNDS", 1500);
    let mut failures = Vec::new();
    for name in FIXTURES {
        let original = std::fs::read(fixture(name)).unwrap();
        for round in 0..rounds {
            let bytes = mutate(&mut rng, &original);
            let copy = bytes.clone();
            let panicked = panics(|| {
                if let Ok(loaded) = load_bytes(bytes, &LoadOptions::default()) {
                    // Walk, format, clone and write what was read, as `ckpt inspect` and
                    // `ckpt convert` do.
                    let _ = format!("{:?}", loaded.value);
                    let _ = loaded.value.clone();
                    let _ = ckpt::walk::leaves(&loaded.value).count();
                    let options = SaveOptions::default().with_archive_name("fuzz");
                    let _ = write_torch(&mut Vec::new(), &loaded.value, &options);
                    let (tensors, _) = flatten_tensors(&loaded.value);
                    let _ = write_safetensors(&mut Vec::new(), &tensors, None);
                }
            });
            if panicked {
                let path = std::env::temp_dir()
                    .join(format!("ckpt-fuzz-{}-{round}", name.replace('/', "_")));
                std::fs::write(&path, &copy).unwrap();
                failures.push(path);
            }
        }
    }
    assert!(failures.is_empty(), "panics on: {failures:#?}");
}

fn model() -> ckpt::Shared<ckpt::StateDictModel> {
    let mut sd = StateDict::new();
    sd.insert(
        "weight".to_string(),
        Tensor::zeros(DType::Float32, &[2, 3]).unwrap(),
    );
    ckpt::shared(ckpt::StateDictModel::new(sd))
}

#[test]
fn mutated_fixtures_never_panic_the_detection_checkpointer() {
    let mut rng = Rng(setting("CKPT_FUZZ_SEED", 0x5eed_1234_abcd_0002) ^ 2);
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for name in FIXTURES {
        let original = std::fs::read(fixture(name)).unwrap();
        let file_name = Path::new(name).file_name().unwrap();
        let path = dir.path().join(file_name);
        for round in 0..setting("CKPT_FUZZ_ROUNDS", 1500) / 5 {
            let bytes = mutate(&mut rng, &original);
            std::fs::write(&path, &bytes).unwrap();
            let path_str = path.to_str().unwrap().to_string();
            let panicked = panics(|| {
                let checkpointer =
                    DetectionCheckpointer::new(model(), "").with_resolver(Resolver::local_only());
                let _ = checkpointer.load(&path_str, ckpt::Checkpointables::All);
            });
            if panicked {
                let keep = std::env::temp_dir().join(format!(
                    "ckpt-fuzz-det-{round}-{}",
                    file_name.to_string_lossy()
                ));
                std::fs::write(&keep, &bytes).unwrap();
                failures.push(keep);
            }
        }
    }
    assert!(failures.is_empty(), "panics on: {failures:#?}");
}
