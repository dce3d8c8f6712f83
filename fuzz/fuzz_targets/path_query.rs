//! Checkpoint paths and names: the resolver (query string, `file://`, `detectron2://`,
//! `catalog://`, where an http(s) URL is cached), the `last_checkpoint` tag, checkpoint
//! names given to a save and the periodic checkpointer's file prefix. Besides never
//! panicking: a path that resolves into the download cache stays inside it, a tag that
//! reads names a plain file of the save directory, and a name that tags reads back as it
//! was written.
#![no_main]

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use ckpt::resolve::{catalog_url, HttpCache, QueryOptions, Resolver};
use ckpt::{shared, Checkpointer, PeriodicCheckpointer, StateDict, StateDictModel};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    path: String,
    tag: Vec<u8>,
    name: String,
    prefix: String,
}

/// The scratch directory of this process's inputs (in memory when /dev/shm exists),
/// removed after each.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let base = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        base.join(format!("ckpt-fuzz-names-{}", std::process::id()))
    })
}

/// Whether `name` is one plain file name.
fn is_plain(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(components.next(), Some(Component::Normal(_)))
        && components.next().is_none()
        && !name.contains(['/', '\\', '\0'])
}

fuzz_target!(|input: Input| {
    let dir = scratch();
    let cache_dir = dir.join("cache");
    let cache = HttpCache::new(&cache_dir).offline(true);
    if let Ok(local) = cache.cached_path(&input.path) {
        let inside = local
            .strip_prefix(&cache_dir)
            .is_ok_and(|rest| rest.components().all(|c| matches!(c, Component::Normal(_))));
        assert!(
            inside,
            "{:?} is cached outside the cache at {local:?}",
            input.path
        );
    }
    let _ = Resolver::local_only().resolve(&input.path);
    let _ = Resolver::with_cache(cache).resolve(&input.path);
    let _ = catalog_url(&input.path);
    if let Some((_, query)) = input.path.split_once('?') {
        let _ = QueryOptions::parse(query, &input.path);
    }

    let save = dir.join("save");
    std::fs::create_dir_all(&save).expect("scratch directory");
    let model = shared(StateDictModel::new(StateDict::new()));
    let checkpointer = Checkpointer::new(model, &save);
    if std::fs::write(save.join(ckpt::LAST_CHECKPOINT), &input.tag).is_ok() {
        if let Ok(Some(name)) = checkpointer.last_checkpoint_name() {
            assert!(is_plain(&name), "the tag {:?} names {name:?}", input.tag);
        }
    }
    if checkpointer.tag_last_checkpoint(&input.name).is_ok() {
        assert!(is_plain(&input.name), "{:?} was tagged", input.name);
        let read = checkpointer.last_checkpoint_name().ok().flatten();
        assert_eq!(
            read.as_deref(),
            Some(input.name.as_str()),
            "the tag changed the name"
        );
    }
    let periodic = PeriodicCheckpointer::builder(checkpointer)
        .period(1)
        .file_prefix(input.prefix.clone())
        .build();
    if periodic.is_ok() {
        assert!(
            is_plain(&input.prefix),
            "{:?} was taken as a file prefix",
            input.prefix
        );
    }
    let _ = std::fs::remove_dir_all(dir);
});
