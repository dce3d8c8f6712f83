//! Object store errors as ckpt errors: the object's URL and what the server answered.

use crate::error::Error;

/// The error of a request about `url` (`s3://bucket/key`): what kind of failure, and what
/// the server answered (its error code and message), or what the connection did, once.
/// (The client's own error repeats its causes at every level; it is logged at debug level.)
pub(super) fn remote_error(url: &str, error: object_store::Error) -> Error {
    use object_store::Error as E;
    tracing::debug!("{url}: {error:?}");
    let answer = server_answer(&error);
    let kind = match &error {
        E::NotFound { .. } => "not found",
        E::Precondition { .. } | E::AlreadyExists { .. } => {
            return Error::Conflict {
                location: url.to_string(),
                reason: format!(
                    "another writer replaced it since this one last wrote or read it \
                     (two checkpointers saving to one directory?); {answer}"
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
        reason: format!("{kind}; {answer}"),
        source: None,
    }
}

/// The server's error code and message (`NoSuchBucket: The specified bucket does not
/// exist`), else the innermost cause (a refused connection, a timeout, retries exhausted).
fn server_answer(error: &object_store::Error) -> String {
    let text = error.to_string();
    let between = |open: &str, close: &str| {
        let start = text.find(open)? + open.len();
        let end = start + text[start..].find(close)?;
        Some(text[start..end].to_string())
    };
    if let Some(code) = between("<Code>", "</Code>") {
        let message = between("<Message>", "</Message>").unwrap_or_default();
        return format!("the server answered {code}: {message}");
    }
    let mut innermost: &dyn std::error::Error = error;
    while let Some(next) = innermost.source() {
        innermost = next;
    }
    let cause = innermost.to_string();
    let cause = cause.trim().trim_end_matches(':').trim();
    // A request that was retried says so at the top level ("after 3 retries").
    match text.find(" after ").filter(|_| text.contains("retries")) {
        Some(at) => {
            let retries: String = text[at..].chars().take(60).collect();
            let retries = retries.split(',').next().unwrap_or_default();
            format!("{cause} ({})", retries.trim())
        }
        None => cause.to_string(),
    }
}

/// Whether `error` says the object does not exist.
pub(super) fn is_not_found(error: &object_store::Error) -> bool {
    matches!(error, object_store::Error::NotFound { .. })
}
