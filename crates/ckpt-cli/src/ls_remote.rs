//! `ckpt ls s3://bucket/prefix`: the checkpoints of an object store prefix, examined as a
//! local directory would be. The tag and every `*.pth` object are fetched into the download
//! cache (again only when an object changed), linked into a temporary directory that holds
//! exactly what the prefix holds now, and listed from there.

use std::fs;
use std::path::Path;

use ckpt::store::{is_object_url, open_dir};

use crate::error::CliError;
use crate::ls::{list_with, Listing};
use crate::output::printable;

/// The listing of `dir` when it is an object store URL, `None` for a local directory.
pub fn list_if_remote(dir: &Path, verify: bool) -> Result<Option<Listing>, CliError> {
    let Some(url) = dir.to_str().filter(|text| is_object_url(text)) else {
        return Ok(None);
    };
    let fail = |e: &ckpt::Error| CliError::new(printable(&e.report().to_string()));
    let store = open_dir(dir).map_err(|e| fail(&e))?;
    let names = store.list().map_err(|e| fail(&e))?;
    let local = tempfile::tempdir().map_err(|e| CliError::new(format!("{url}: {e}")))?;
    for name in names
        .iter()
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
    Ok(Some(listing))
}
