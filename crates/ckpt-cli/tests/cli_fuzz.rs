//! `ckpt inspect` and `ckpt convert` on damaged copies of the committed fixtures (seeded
//! mutations): a user error on one line or a report, never a panic.

mod common;

use std::path::Path;

use common::{ckpt, stderr};

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

/// xorshift64*: a fixed sequence, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

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
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x05ee_dc11_f022);
    let mut panics = Vec::new();
    for name in FIXTURES {
        let original = std::fs::read(root.join(name)).unwrap();
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
