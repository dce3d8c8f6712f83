//! Sending one rank's checkpoint file to every rank, so that every rank parses identical
//! bytes and ends with identical state.
//!
//! Rank 0 broadcasts a header (its file's kind, matching flag and length, or why it cannot
//! send it), then the file's bytes straight from a memory map of the file, in pieces of
//! [`SLICE_PIECE`]. Every other rank receives them into one buffer allocated once, which the
//! parsed tensors then view: no rank ever holds a second serialised copy of the checkpoint.

use std::path::Path;
use std::sync::Arc;

use crate::detection::file::{read_detection_buffer, FileKind};
use crate::dist::{Communicator, SlicePart, SLICE_PIECE};
use crate::error::{Error, Result, ResultExt};
use crate::resolve::Resolved;
use crate::tensor::{AnonMemory, Buffer};
use crate::value::Dict;

const OK: u8 = 1;
const FAILED: u8 = 0;
/// Status, kind, matching flag, length (u64, little-endian).
const HEADER: usize = 3 + 8;

/// Rank 0 sends its file (or its error, so that no rank waits forever); every rank returns
/// the checkpoint dict parsed from the same bytes.
pub(crate) fn broadcast_checkpoint(
    comm: &dyn Communicator,
    resolved: &Result<Resolved>,
) -> Result<Dict> {
    if comm.is_main_process() {
        send_checkpoint(comm, resolved)
    } else {
        receive_checkpoint(comm)
    }
}

fn send_checkpoint(comm: &dyn Communicator, resolved: &Result<Resolved>) -> Result<Dict> {
    let opened = match resolved {
        Ok(resolved) => open_mapped(&resolved.path).map(|(file, map)| (resolved, file, map)),
        Err(e) => Err(Error::invalid(e.report().to_string())),
    };
    let (resolved, file, map) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            comm.broadcast(&mut [&[FAILED][..], e.report().to_string().as_bytes()].concat())?;
            return Err(e);
        }
    };
    let kind = FileKind::of(&resolved.path);
    let matching = resolved.options.matching_heuristics;
    let bytes = map.as_bytes();
    let mut header = vec![OK, kind.to_byte(), u8::from(matching)];
    header.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    comm.broadcast(&mut header)?;
    for piece in bytes.chunks(SLICE_PIECE) {
        comm.broadcast_slice(SlicePart::Send(piece))?;
    }
    read_detection_buffer(map, Some(&file), kind, matching).in_file(&resolved.path)
}

fn open_mapped(path: &Path) -> Result<(std::fs::File, Arc<Buffer>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let map = Buffer::map(&file).map_err(|e| Error::io(path, e))?;
    Ok((file, Arc::new(map)))
}

fn receive_checkpoint(comm: &dyn Communicator) -> Result<Dict> {
    let mut header = Vec::new();
    comm.broadcast(&mut header)?;
    let (kind, matching, len) = match header.split_first() {
        Some((&OK, rest)) if header.len() == HEADER => {
            let kind = FileKind::from_byte(rest[0]).ok_or_else(|| {
                Error::format(format!("rank 0 sent an unknown file kind {}", rest[0]))
            });
            let mut len = [0u8; 8];
            len.copy_from_slice(&rest[2..]);
            (kind, rest[1] != 0, u64::from_le_bytes(len))
        }
        Some((&FAILED, message)) => {
            return Err(Error::invalid(format!(
                "rank 0 could not send the checkpoint: {}",
                String::from_utf8_lossy(message)
            )))
        }
        _ => {
            return Err(Error::format(format!(
                "rank 0 sent a malformed checkpoint header of {} bytes",
                header.len()
            )))
        }
    };
    // The pieces are received even when this rank cannot use them (an unknown kind, no
    // memory for the buffer): every rank must take part in every broadcast.
    let mut buffer = receive_buffer(len);
    let mut scratch = Vec::new();
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let mut start = 0;
    while start < len {
        let end = start + (len - start).min(SLICE_PIECE);
        let target = match &mut buffer {
            Ok(memory) => &mut memory.as_bytes_mut()[start..end],
            Err(_) => {
                scratch.resize(end - start, 0);
                &mut scratch[..]
            }
        };
        if let Err(e) = comm.broadcast_slice(SlicePart::Receive(target)) {
            // No memory for the buffer is the first thing to report.
            return Err(buffer.err().unwrap_or(e));
        }
        start = end;
    }
    let buffer = Buffer::Anon(buffer?);
    read_detection_buffer(Arc::new(buffer), None, kind?, matching)
}

/// Zeroed anonymous memory for `len` received bytes (pages come as they are written).
fn receive_buffer(len: u64) -> Result<AnonMemory> {
    let too_big = || {
        Error::invalid(format!(
            "rank 0 sent a checkpoint of {len} bytes, more memory than this rank could have"
        ))
    };
    let len = usize::try_from(len).map_err(|_| too_big())?;
    let map = memmap2::MmapMut::map_anon(len.max(1)).map_err(|_| too_big())?;
    Ok(AnonMemory::new(map, len))
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

    /// Rank 1 of 2, receiving the scripted broadcasts in order.
    struct Receiver(std::sync::Mutex<Vec<Vec<u8>>>);

    impl Receiver {
        fn new(broadcasts: &[&[u8]]) -> Receiver {
            Receiver(std::sync::Mutex::new(
                broadcasts.iter().rev().map(|b| b.to_vec()).collect(),
            ))
        }
    }

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
            *buffer = self.0.lock().unwrap().pop().unwrap_or_default();
            Ok(())
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
    }

    fn header(kind: u8, len: u64) -> Vec<u8> {
        [&[OK, kind, 0][..], &len.to_le_bytes()].concat()
    }

    fn received(broadcasts: &[&[u8]]) -> String {
        let none: Result<Resolved> = Err(Error::invalid("not resolved here"));
        broadcast_checkpoint(&Receiver::new(broadcasts), &none)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn malformed_broadcasts_are_errors_not_panics() {
        assert!(received(&[b""]).contains("malformed checkpoint header of 0 bytes"));
        assert!(received(&[b"\x01\x02\x00"]).contains("malformed checkpoint header of 3"));
        assert!(received(&[b"\x00disk full"])
            .contains("rank 0 could not send the checkpoint: disk full"));
        assert!(received(&[&header(9, 3), b"abc"]).contains("unknown file kind 9"));
        // A piece of the wrong length: the broadcast's own error.
        assert!(received(&[&header(2, 3), b"ab"]).contains("expected 3"));
        // A valid header before bytes that are no checkpoint: the reader's error.
        assert!(received(&[&header(2, 2), b"\xff\xff"]).contains("not a checkpoint"));
        assert!(received(&[&header(2, u64::MAX)]).contains("more memory than this rank"));
    }

    #[test]
    fn resume_decisions_decode_or_fail_cleanly() {
        let decide =
            |bytes: &[u8]| broadcast_last_checkpoint(&Receiver::new(&[bytes]), || Ok(None));
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
