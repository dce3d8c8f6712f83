//! `ckpt inspect` and `ckpt convert` on damaged copies of the committed fixtures (seeded
//! mutations): a user error on one line or a report, never a panic.

use std::path::Path;

use crate::support::rng::Rng;
use crate::support::{ckpt, repo_fixture, stderr};

const FIXTURES: &[&str] = &[
    "d2_model_zoo.pkl",
    "detectron1_py2.pkl",
    "dtypes.pt",
    "legacy.pt",
    "misc.pt",
    "optim.pt",
    "plain_p0.pkl",
    "proto4.pt",
    "pycls_like.pyth",
    "views.pt",
    "writer/sd_plain.safetensors",
];

fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..1 + rng.below(3) {
        if out.is_empty() {
            break;
        }
        let at = rng.below(out.len());
        match rng.below(4) {
            0 => out[at] ^= 1 << rng.below(8),
            1 => out[at] = [0, 0x7f, 0x80, 0xff][rng.below(4)],
            2 => out.truncate(at),
            _ => {
                let end = (at + 4).min(out.len());
                out[at..end].fill(0xff);
            }
        }
    }
    out
}

#[test]
fn damaged_files_never_panic_inspect_or_convert() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x05ee_dc11_f022);
    let mut panics = Vec::new();
    for name in FIXTURES {
        let original = std::fs::read(repo_fixture(name)).unwrap();
        let file_name = Path::new(name).file_name().unwrap();
        for round in 0..25 {
            let bytes = mutate(&mut rng, &original);
            let input = dir.path().join(file_name);
            std::fs::write(&input, &bytes).unwrap();
            let output = dir.path().join("out.safetensors");
            let runs = [
                ckpt(&["inspect".as_ref(), input.as_os_str()]),
                ckpt(&["inspect".as_ref(), "--json".as_ref(), input.as_os_str()]),
                ckpt(&["convert".as_ref(), input.as_os_str(), output.as_os_str()]),
            ];
            for run in runs {
                let err = stderr(&run);
                if run.status.code() == Some(101) || err.contains("panicked") {
                    let keep = std::env::temp_dir().join(format!(
                        "ckpt-cli-fuzz-{round}-{}",
                        file_name.to_string_lossy()
                    ));
                    std::fs::write(&keep, &bytes).unwrap();
                    panics.push(format!("{}: {err}", keep.display()));
                }
            }
        }
    }
    assert!(panics.is_empty(), "{panics:#?}");
}
