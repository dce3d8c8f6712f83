//! Object store errors as ckpt errors: the object's URL and what the server answered.

use crate::error::Error;

/// The error of a request about `url` (`s3://bucket/key`).
pub(super) fn remote_error(url: &str, error: object_store::Error) -> Error {
    use object_store::Error as E;
    let reason = match &error {
        E::NotFound { .. } => "not found (no such object, or no such bucket)",
        E::Precondition { .. } | E::AlreadyExists { .. } => {
            return Error::Conflict {
                location: url.to_string(),
                reason: format!(
                    "another writer replaced it since this one last wrote or read it \
                     (two checkpointers saving to one directory?): {error}"
                ),
            }
        }
        E::PermissionDenied { .. } => "access denied",
        E::Unauthenticated { .. } => "not authenticated (no or wrong credentials)",
        E::NotSupported { .. } | E::NotImplemented { .. } => "not supported by this store",
        _ => "the request failed",
    };
    Error::Remote {
        url: url.to_string(),
        reason: format!("{reason}: {error}"),
        source: Some(Box::new(error)),
    }
}

/// Whether `error` says the object does not exist.
pub(super) fn is_not_found(error: &object_store::Error) -> bool {
    matches!(error, object_store::Error::NotFound { .. })
}
