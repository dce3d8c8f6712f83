//! Partial reads of checkpoints in an S3-compatible object store (the `s3` feature): reading
//! the structure of a torch archive or a safetensors file fetches the directory, pickle and
//! headers only; a tensor's bytes are fetched when it is copied out; bytes that cannot be
//! fetched any more are an error, never zeros; whole downloads report their progress.
//!
//! The server is the one `AWS_ENDPOINT_URL` names, as for `object_store_s3` (skipped without
//! it, except under `CI=true`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ckpt::format::{load_with, save_safetensors, save_torch, Format, LoadOptions, SaveOptions};
use ckpt::store::{ObjectStoreDir, Store};
use ckpt::{DType, StateDict, Value};

use crate::object_store_s3::fresh_prefix as prefix;
use crate::support::*;

/// A store on `url` with a download cache of its own (nothing cached yet).
fn fresh_store(url: &str, dir: &tempfile::TempDir) -> ObjectStoreDir {
    ObjectStoreDir::builder(url)
        .cache_dir(dir.path().join("cache"))
        .build()
        .unwrap()
}

/// `layers` float32 tensors of 256 KiB each, `layer<i>.weight`, counting from `i * 1000`.
fn big_state(layers: usize) -> StateDict {
    let mut state = StateDict::new();
    for i in 0..layers {
        state.insert(
            format!("layer{i}.weight"),
            counting(i as f32 * 1000.0, &[256, 256]),
        );
    }
    state
}

/// Uploads `bytes` as `name` of `store`.
fn put(store: &ObjectStoreDir, name: &str, bytes: &[u8]) {
    let mut write = store.create(name).unwrap();
    write.write_all(bytes).unwrap();
    write.commit().unwrap();
}

/// The bytes of a torch archive of `state`.
fn torch_bytes(state: &StateDict, dir: &tempfile::TempDir) -> Vec<u8> {
    let path = dir.path().join("model.pth");
    save_torch(&path, &state.to_value(), &SaveOptions::default()).unwrap();
    std::fs::read(&path).unwrap()
}

fn tensors_of(value: &Value) -> StateDict {
    StateDict::from_value(value).unwrap()
}

#[test]
fn inspecting_a_large_checkpoint_on_s3_fetches_its_pickle_and_headers_only() {
    let Some(url) = prefix("partial-inspect") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = big_state(48);
    let bytes = torch_bytes(&state, &dir);
    let store = fresh_store(&url, &dir);
    put(&store, "model.pth", &bytes);
    let uploaded = store.bytes_fetched();

    let path = store.partial_file("model.pth").unwrap();
    let loaded = load_with(&path, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.format, Format::TorchZip);
    let read = tensors_of(&loaded.value);
    assert_eq!(read.len(), 48);
    assert_eq!(read.get("layer7.weight").unwrap().shape(), &[256, 256]);
    let fetched = store.bytes_fetched() - uploaded;
    let size = bytes.len() as u64;
    println!(
        "inspect of a {size}-byte archive fetched {fetched} bytes ({:.3}%)",
        fetched as f64 * 100.0 / size as f64
    );
    assert!(fetched * 20 < size, "{fetched} of {size} bytes fetched");

    // A partial load: one tensor copied out fetches its bytes, not the others'.
    let weight = read.get("layer7.weight").unwrap();
    let owned = weight.to_owned_as(DType::Float32).unwrap();
    assert_eq!(
        owned.storage().as_bytes(),
        state.get("layer7.weight").unwrap().storage().as_bytes()
    );
    let with_one = store.bytes_fetched() - uploaded - fetched;
    assert_eq!(with_one, 256 * 256 * 4, "one tensor's bytes, nothing else");

    // Read again (another run): what is in the cache is not fetched again.
    let again = fresh_store(&url, &dir);
    let path = again.partial_file("model.pth").unwrap();
    let value = load_with(&path, &LoadOptions::default()).unwrap().value;
    let read = tensors_of(&value);
    read.get("layer7.weight")
        .unwrap()
        .to_owned_as(DType::Float32)
        .unwrap();
    assert_eq!(again.bytes_fetched(), 0);
    // Every tensor copied out is the saved one.
    for (name, tensor) in read.iter() {
        let copy = tensor.to_owned_as(DType::Float32).unwrap();
        assert_eq!(
            copy.storage().as_bytes(),
            state.get(name).unwrap().storage().as_bytes(),
            "{name}"
        );
    }
    let all = again.bytes_fetched() + fetched + with_one;
    assert!(
        all <= size && all >= 48 * 256 * 256 * 4,
        "{all} of {size} bytes"
    );
}

#[test]
fn a_safetensors_file_on_s3_is_read_from_its_header_alone() {
    let Some(url) = prefix("partial-safetensors") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = big_state(8);
    let local = dir.path().join("model.safetensors");
    save_safetensors(&local, &state, None).unwrap();
    let bytes = std::fs::read(&local).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let store = fresh_store(&url, &dir);
    put(&store, "model.safetensors", &bytes);
    let uploaded = store.bytes_fetched();

    let path = store.partial_file("model.safetensors").unwrap();
    let loaded = load_with(&path, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.format, Format::Safetensors);
    assert_eq!(tensors_of(&loaded.value).len(), 8);
    assert_eq!(store.bytes_fetched() - uploaded, 8 + header);
}

#[test]
fn bytes_of_a_replaced_object_are_an_error_naming_it_never_zeros() {
    let Some(url) = prefix("partial-replaced") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = big_state(4);
    let store = fresh_store(&url, &dir);
    put(&store, "model.pth", &torch_bytes(&state, &dir));
    let path = store.partial_file("model.pth").unwrap();
    let value = load_with(&path, &LoadOptions::default()).unwrap().value;

    // Another writer replaces the object: its old bytes cannot be fetched any more.
    put(&store, "model.pth", &torch_bytes(&big_state(5), &dir));
    let read = tensors_of(&value);
    let err = read
        .get("layer2.weight")
        .unwrap()
        .to_owned_as(DType::Float32)
        .unwrap_err();
    let text = err.report().to_string();
    assert!(text.contains(&format!("{url}/model.pth")), "{text}");
    assert!(text.contains("offset"), "{text}");
    assert!(text.contains("changed"), "{text}");
    println!("{text}");
    let err = read
        .get("layer3.weight")
        .unwrap()
        .storage()
        .clone()
        .try_into_owned()
        .unwrap_err();
    assert!(err.report().to_string().contains("offset"), "{err:?}");
}

#[test]
fn a_whole_download_from_s3_reports_its_progress_and_fills_the_cache() {
    let Some(url) = prefix("download-progress") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bytes = torch_bytes(&big_state(24), &dir);
    let expected = bytes.len() as u64;
    let done = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let store = ObjectStoreDir::builder(&url)
        .cache_dir(dir.path().join("cache"))
        .part_size(5 << 20)
        .progress({
            let (done, calls) = (done.clone(), calls.clone());
            move |downloaded: u64, total: Option<u64>| {
                assert_eq!(total, Some(expected));
                done.fetch_max(downloaded, Ordering::Relaxed);
                calls.fetch_add(1, Ordering::Relaxed);
            }
        })
        .build()
        .unwrap();
    put(&store, "model.pth", &bytes);
    let local: PathBuf = store.local_file("model.pth").unwrap();
    assert_eq!(std::fs::read(&local).unwrap(), bytes);
    assert_eq!(done.load(Ordering::Relaxed), bytes.len() as u64);
    assert!(calls.load(Ordering::Relaxed) > 2);
}

#[test]
fn the_resolver_gives_readers_a_partial_copy_until_the_whole_object_is_cached() {
    let Some(url) = prefix("partial-resolver") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = big_state(4);
    let bytes = torch_bytes(&state, &dir);
    put(&fresh_store(&url, &dir), "model.pth", &bytes);
    let cache = dir.path().join("resolver-cache");
    let resolver = ckpt::resolve::Resolver::with_cache(ckpt::resolve::HttpCache::new(&cache));
    let object = format!("{url}/model.pth");

    let partial = resolver.resolve_partial(&object).unwrap().path;
    assert!(partial.starts_with(cache.join("partial")), "{partial:?}");
    assert_eq!(partial.file_name().unwrap(), "model.pth");
    let read = tensors_of(&ckpt::format::load(&partial).unwrap());
    assert_eq!(read.len(), 4);
    let on_disk = std::fs::metadata(&partial).unwrap();
    assert_eq!(
        on_disk.len(),
        bytes.len() as u64,
        "the object's size, sparse"
    );

    let whole = resolver.get_local_path(&object).unwrap();
    assert_eq!(std::fs::read(&whole).unwrap(), bytes);
    // Once the whole object is cached, readers get it too.
    assert_eq!(resolver.get_partial_path(&object).unwrap(), whole);
}

#[test]
fn a_partial_copy_replaced_by_another_process_is_never_read_as_fetched() {
    let Some(url) = prefix("partial-replaced") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = big_state(4);
    let bytes = torch_bytes(&state, &dir);
    let store = fresh_store(&url, &dir);
    put(&store, "model.pth", &bytes);

    // A first reader fetches one tensor's bytes into its copy.
    let path = store.partial_file("model.pth").unwrap();
    let value = load_with(&path, &LoadOptions::default()).unwrap().value;
    let first = tensors_of(&value);
    let before = first.get("layer1.weight").unwrap();
    before.to_owned_as(DType::Float32).unwrap();

    // Another process puts a new, empty copy in place (as it does when it finds none).
    let replacement = path.with_extension("other");
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::File::create(&replacement)
        .unwrap()
        .set_len(len)
        .unwrap();
    std::fs::rename(&replacement, &path).unwrap();

    // The first reader goes on with its own copy; a new reader does not take the ranges the
    // first one recorded for a file that is no longer there.
    assert_eq!(
        before
            .to_owned_as(DType::Float32)
            .unwrap()
            .storage()
            .as_bytes(),
        state.get("layer1.weight").unwrap().storage().as_bytes()
    );
    let again = fresh_store(&url, &dir);
    let path = again.partial_file("model.pth").unwrap();
    let value = load_with(&path, &LoadOptions::default()).unwrap().value;
    let read = tensors_of(&value);
    for (name, tensor) in state.iter() {
        let got = read.get(name).unwrap().to_owned_as(DType::Float32).unwrap();
        assert_eq!(
            got.storage().as_bytes(),
            tensor.storage().as_bytes(),
            "{name}"
        );
    }
}
