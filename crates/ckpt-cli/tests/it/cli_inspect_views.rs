//! `ckpt inspect` of expanded views (zero strides) that declare far more bytes than the
//! file holds: the totals saturate instead of overflowing.

use ckpt::format::{save_torch, SaveOptions};
use ckpt::{Dict, Tensor, Value};

use crate::support::{ckpt, success};

#[test]
fn totals_of_huge_expanded_views_do_not_overflow() {
    let one = Tensor::from_slice(&[0f32], &[1]).unwrap();
    let mut dict = Dict::new();
    for name in ["a", "b", "c", "d", "e"] {
        // 2^60 float32 elements over one: 2^62 bytes each, five of them overflow 64 bits.
        let expanded = one.view(&[1 << 60], &[0], 0).unwrap();
        dict.insert(name, Value::Tensor(expanded));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("expanded.pth");
    save_torch(&path, &Value::Dict(dict), &SaveOptions::default()).unwrap();

    success(&ckpt(&["inspect".as_ref(), path.as_os_str()]));
    let json = success(&ckpt(&[
        "inspect".as_ref(),
        "--json".as_ref(),
        path.as_os_str(),
    ]));
    assert!(json.contains(&u64::MAX.to_string()), "{json}");
}
