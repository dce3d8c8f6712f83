//! Writing torch zip archives that `torch.load(weights_only=True)` and `mmap=True` read.

use std::io::Write;
use std::path::Path;

use crate::error::Result;
use crate::format::SaveOptions;
use crate::value::Value;

/// Streams `value` as a torch zip archive into `out`.
pub fn write_torch(out: &mut dyn Write, value: &Value, options: &SaveOptions) -> Result<()> {
    let _ = (out, value, options);
    todo!("torch writer")
}

/// The archive folder torch would use for `path`: the file name up to its last `.`, when it
/// is non-empty ASCII; else `archive`.
pub(crate) fn archive_name_for(path: &Path) -> String {
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .map(|n| match n.rfind('.') {
            Some(dot) => n[..dot].to_string(),
            None => n,
        })
        .unwrap_or_default();
    if !stem.is_empty() && stem.is_ascii() && !stem.contains(['/', '\\']) {
        stem
    } else {
        "archive".to_string()
    }
}
