//! Sending one rank's checkpoint file to every rank: the raw bytes with a small trailer, so
//! that every rank parses identical bytes and ends with identical state.

use std::path::Path;

use crate::detection::file::{read_detection_bytes, FileKind};
use crate::dist::Communicator;
use crate::error::{Error, Result};
use crate::resolve::Resolved;
use crate::value::Dict;

/// Trailer bytes after the payload: kind, matching flag, status.
const TRAILER: usize = 3;
const OK: u8 = 1;
const FAILED: u8 = 0;

/// Rank 0 sends its file (or its error, so that no rank waits forever); every rank returns
/// the checkpoint dict parsed from the same bytes.
pub(crate) fn broadcast_checkpoint(
    comm: &dyn Communicator,
    resolved: &Result<Resolved>,
) -> Result<Dict> {
    let mut buffer = Vec::new();
    if comm.is_main_process() {
        buffer = match resolved {
            Ok(resolved) => match std::fs::read(&resolved.path) {
                Ok(mut bytes) => {
                    bytes.push(FileKind::of(&resolved.path).to_byte());
                    bytes.push(u8::from(resolved.options.matching_heuristics));
                    bytes.push(OK);
                    bytes
                }
                Err(e) => failure(&Error::io(&resolved.path, e)),
            },
            Err(e) => failure(e),
        };
    }
    comm.broadcast(&mut buffer)?;
    let split = buffer
        .len()
        .checked_sub(TRAILER)
        .ok_or_else(|| Error::format("the checkpoint received from rank 0 has no trailer"))?;
    let trailer = buffer.split_off(split);
    match trailer.as_slice() {
        [kind, flag, OK] => {
            let kind = FileKind::from_byte(*kind)
                .ok_or_else(|| Error::format(format!("rank 0 sent an unknown file kind {kind}")))?;
            let result = read_detection_bytes(buffer, kind, *flag != 0);
            match (result, resolved) {
                (Err(e), Ok(resolved)) if comm.is_main_process() => Err(e.in_file(&resolved.path)),
                (result, _) => result,
            }
        }
        _ => Err(Error::invalid(format!(
            "rank 0 could not send the checkpoint: {}",
            String::from_utf8_lossy(&buffer)
        ))),
    }
}

fn failure(error: &Error) -> Vec<u8> {
    let mut bytes = error.report().to_string().into_bytes();
    bytes.extend_from_slice(&[0, 0, FAILED]);
    bytes
}

/// What rank 0 decided about resuming (the name of its last checkpoint, if any), sent to
/// every rank; rank 0 gets its own result back unchanged.
pub(crate) fn broadcast_last_checkpoint(
    comm: &dyn Communicator,
    local: impl FnOnce() -> Result<Option<String>>,
) -> Result<Option<String>> {
    if !comm.is_main_process() {
        let mut buffer = Vec::new();
        comm.broadcast(&mut buffer)?;
        return match buffer.split_first() {
            Some((0, _)) => Ok(None),
            Some((1, name)) => String::from_utf8(name.to_vec())
                .map(Some)
                .map_err(|_| Error::format("rank 0 sent a checkpoint name that is not UTF-8")),
            Some((2, message)) => Err(Error::invalid(format!(
                "rank 0 cannot resume: {}",
                String::from_utf8_lossy(message)
            ))),
            _ => Err(Error::format("rank 0 sent a malformed resume decision")),
        };
    }
    let decision = local();
    let mut buffer = match &decision {
        Ok(None) => vec![0],
        Ok(Some(name)) => [&[1u8][..], name.as_bytes()].concat(),
        Err(e) => [&[2u8][..], e.report().to_string().as_bytes()].concat(),
    };
    comm.broadcast(&mut buffer)?;
    decision
}

/// The path shown in messages on a rank that may not have resolved the path itself.
pub(crate) fn shown_path<'a>(resolved: &'a Result<Resolved>, fallback: &'a str) -> &'a Path {
    match resolved {
        Ok(resolved) => &resolved.path,
        Err(_) => Path::new(fallback),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rank 1 of 2, receiving the same bytes from every broadcast.
    struct Receiver(Vec<u8>);

    impl Communicator for Receiver {
        fn rank(&self) -> usize {
            1
        }
        fn world_size(&self) -> usize {
            2
        }
        fn all_gather(&self, value: &[u8]) -> Result<Vec<Vec<u8>>> {
            Ok(vec![value.to_vec(), value.to_vec()])
        }
        fn broadcast(&self, buffer: &mut Vec<u8>) -> Result<()> {
            buffer.clone_from(&self.0);
            Ok(())
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
    }

    fn received(bytes: &[u8]) -> String {
        let none: Result<Resolved> = Err(Error::invalid("not resolved here"));
        broadcast_checkpoint(&Receiver(bytes.to_vec()), &none)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn malformed_broadcasts_are_errors_not_panics() {
        assert!(received(b"").contains("no trailer"));
        assert!(received(b"\x02\x00").contains("no trailer"));
        assert!(received(b"disk full\x00\x00\x00")
            .contains("rank 0 could not send the checkpoint: disk full"));
        assert!(received(b"abc\x09\x00\x01").contains("unknown file kind 9"));
        // A valid trailer around bytes that are no checkpoint: the reader's error.
        assert!(received(b"\xff\xff\x02\x00\x01").contains("not a checkpoint"));
    }

    #[test]
    fn resume_decisions_decode_or_fail_cleanly() {
        let decide =
            |bytes: &[u8]| broadcast_last_checkpoint(&Receiver(bytes.to_vec()), || Ok(None));
        assert_eq!(decide(b"\x00").unwrap(), None);
        assert_eq!(
            decide(b"\x01model_final.pth").unwrap().as_deref(),
            Some("model_final.pth")
        );
        assert!(decide(b"\x02broken tag")
            .unwrap_err()
            .to_string()
            .contains("rank 0 cannot resume: broken tag"));
        let err = decide(b"").unwrap_err();
        assert!(matches!(err.root(), Error::Format { .. }), "{err:?}");
        let err = decide(b"\x01\xff").unwrap_err();
        assert!(matches!(err.root(), Error::Format { .. }), "{err:?}");
    }
}
