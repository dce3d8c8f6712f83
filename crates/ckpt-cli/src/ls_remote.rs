//! `ckpt ls s3://bucket/prefix`: the checkpoints of an object store prefix, examined as a
//! local directory would be. The tag and every `*.pth` object are fetched into the download
//! cache (again only when an object changed, with a progress bar on a terminal), linked into a temporary directory that holds
//! exactly what the prefix holds now, and listed from there. The modified times shown are
//! the objects' (`Last-Modified`), not those of the local copies.

use std::fs;
use std::path::Path;

use ckpt::store::{is_object_url, Entry, ObjectStoreDir, Store};

use crate::error::CliError;
use crate::ls::{list_with, Listing};
use crate::output::printable;
use crate::source::DownloadBar;
use crate::time::rfc3339_utc;

/// The listing of `dir` when it is an object store URL, `None` for a local directory.
pub fn list_if_remote(dir: &Path, verify: bool) -> Result<Option<Listing>, CliError> {
    let Some(url) = dir.to_str().filter(|text| is_object_url(text)) else {
        return Ok(None);
    };
    let fail = |e: &ckpt::Error| CliError::new(printable(&e.report().to_string()));
    let store = ObjectStoreDir::builder(url)
        .progress(DownloadBar::default())
        .build()
        .map_err(|e| fail(&e))?;
    let entries = store.list_entries().map_err(|e| fail(&e))?;
    let local = tempfile::tempdir().map_err(|e| CliError::new(format!("{url}: {e}")))?;
    for name in entries
        .iter()
        .map(|entry| &entry.name)
        .filter(|name| name.ends_with(".pth") || *name == "last_checkpoint")
    {
        let cached = store.local_file(name).map_err(|e| fail(&e))?;
        let linked = local.path().join(name);
        if fs::hard_link(&cached, &linked).is_err() {
            fs::copy(&cached, &linked)
                .map_err(|e| CliError::new(format!("{}: {e}", linked.display())))?;
        }
    }
    let mut listing = list_with(local.path(), verify)?;
    listing.dir = url.to_string();
    use_object_times(&mut listing, &entries);
    Ok(Some(listing))
}

/// Replaces the modified times of the local copies with those of the objects (unknown when
/// the store does not say).
fn use_object_times(listing: &mut Listing, entries: &[Entry]) {
    for checkpoint in &mut listing.checkpoints {
        checkpoint.modified = entries
            .iter()
            .find(|entry| entry.name == checkpoint.file)
            .and_then(|entry| entry.modified)
            .map(rfc3339_utc);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::ls::list;

    #[test]
    fn the_listing_shows_the_objects_times_not_the_copies() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["model_0000009.pth", "model_final.pth"] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        let mut listing = list(dir.path()).unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let entries = [
            Entry::new("last_checkpoint", 17).with_modified(at),
            Entry::new("model_0000009.pth", 0).with_modified(at),
            Entry::new("model_final.pth", 0),
        ];
        use_object_times(&mut listing, &entries);
        let times: Vec<(&str, Option<&str>)> = listing
            .checkpoints
            .iter()
            .map(|c| (c.file.as_str(), c.modified.as_deref()))
            .collect();
        assert_eq!(
            times,
            [
                ("model_0000009.pth", Some("2023-11-14T22:13:20Z")),
                ("model_final.pth", None),
            ]
        );
    }
}
