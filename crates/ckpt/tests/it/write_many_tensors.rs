//! Writing cost is linear in the number of tensors: 50,000 small tensors make one archive
//! with one record per storage (run in release to see the time; no timed assert here).

use ckpt::format::{save_torch, SaveOptions};
use ckpt::{StateDict, Tensor};

#[test]
fn fifty_thousand_small_tensors_make_one_record_each() {
    let n = 50_000usize;
    let mut sd = StateDict::new();
    for i in 0..n {
        sd.insert(
            format!("blocks.{i}.weight"),
            Tensor::from_slice(&[i as f32; 4], &[2, 2]).unwrap(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.pt");
    let start = std::time::Instant::now();
    save_torch(&path, &sd.to_value(), &SaveOptions::default()).unwrap();
    eprintln!("wrote {n} tensors in {:?}", start.elapsed());
    let bytes = std::fs::read(&path).unwrap();
    // Classic end record: the entry count saturates at 0xFFFF; the zip64 record has it all.
    let eocd = bytes.len() - 22;
    assert_eq!(&bytes[eocd..eocd + 4], b"PK\x05\x06");
    let zip64 = eocd - 20 - 56;
    assert_eq!(&bytes[zip64..zip64 + 4], b"PK\x06\x06");
    let entries = u64::from_le_bytes(bytes[zip64 + 24..zip64 + 32].try_into().unwrap());
    assert_eq!(entries, n as u64 + 6);
}
