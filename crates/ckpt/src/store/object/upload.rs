//! A streaming write to an object store: bytes are cut into parts uploaded while the writer
//! goes on (a multipart upload, at most `parts_in_flight` parts in memory besides the one
//! being filled), completed at commit and aborted otherwise. A file smaller than one part is
//! a single put. Either way the object appears whole or not at all.
//!
//! A marker object (`<TEMP_PREFIX><owner>-<unique>-<name>.upload`, holding the upload id)
//! lives beside the checkpoints while an upload is open, so that the upload of a writer that
//! crashed can be found and aborted later ([`super::ObjectStoreDir`]'s
//! `remove_stale_temporaries`) without touching another writer's upload in progress.
//!
//! Completing is retried like any request, and a retry whose first attempt did complete the
//! upload fails (the upload is gone). So a failed completion is checked with a HEAD of the
//! object ([`check_completed`]): the object there, of the size written, no older than this
//! upload (and, for S3, of as many parts), is the commit that succeeded.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::time::{Duration, Instant, SystemTime};

use object_store::multipart::PartId;
use object_store::path::Path as ObjectPath;
use object_store::{MultipartId, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::task::JoinHandle;

use super::error::remote_error;
use super::ObjectStoreDir;
use crate::error::{Error, Result};
use crate::store::atomic::{name_hint, unique};
use crate::store::{temp_owner, PendingWrite, TEMP_PREFIX};

/// The ending of upload marker names.
pub(super) const MARKER_SUFFIX: &str = ".upload";

/// A multipart upload in progress.
struct Upload {
    id: MultipartId,
    marker: ObjectPath,
    /// The parts uploaded, in order.
    done: Vec<PartId>,
    in_flight: VecDeque<JoinHandle<object_store::Result<PartId>>>,
    /// How long starting took (the upload's creation and its marker's put): how much
    /// earlier than its marker the object of the upload may be dated.
    start_took: Duration,
}

/// The [`PendingWrite`] of an [`ObjectStoreDir`].
pub(super) struct ObjectWrite<'a> {
    dir: &'a ObjectStoreDir,
    path: ObjectPath,
    name: String,
    buffer: Vec<u8>,
    /// The bytes written so far.
    size: u64,
    upload: Option<Upload>,
    /// The first error of an upload; every later write fails with it.
    failed: Option<String>,
    finished: bool,
}

impl<'a> ObjectWrite<'a> {
    pub(super) fn new(dir: &'a ObjectStoreDir, name: &str) -> ObjectWrite<'a> {
        ObjectWrite {
            dir,
            path: dir.object_path(name),
            name: name.to_string(),
            buffer: Vec::with_capacity(dir.part_size.min(1 << 20)),
            size: 0,
            upload: None,
            failed: None,
            finished: false,
        }
    }

    fn url(&self) -> String {
        self.dir.url_of(&self.name)
    }

    /// Starts the multipart upload and writes its marker.
    fn start(&mut self) -> Result<&mut Upload> {
        if self.upload.is_none() {
            let multipart = self.dir.multipart.clone();
            let objects = self.dir.objects.clone();
            let path = self.path.clone();
            let marker_name = format!(
                "{TEMP_PREFIX}{}-{}-{}{MARKER_SUFFIX}",
                temp_owner(),
                unique(),
                name_hint(&self.name)
            );
            let marker = self.dir.object_path(&marker_name);
            let marker_for_task = marker.clone();
            let url = self.url();
            let began = Instant::now();
            let id = self.dir.block_on(async move {
                let id = multipart
                    .create_multipart(&path)
                    .await
                    .map_err(|e| remote_error(&url, e))?;
                let record = format!("{id}\n{path}\n");
                objects
                    .put(&marker_for_task, PutPayload::from(record.into_bytes()))
                    .await
                    .map_err(|e| remote_error(&url, e))?;
                Ok::<_, Error>(id)
            })?;
            tracing::debug!("Started the multipart upload {id} of {}", self.url());
            self.upload = Some(Upload {
                id,
                marker,
                done: Vec::new(),
                in_flight: VecDeque::new(),
                start_took: began.elapsed(),
            });
        }
        self.upload
            .as_mut()
            .ok_or_else(|| Error::invalid("the upload was not started"))
    }

    /// Uploads the buffer as the next part, waiting first for the oldest part when
    /// `parts_in_flight` are already under way.
    fn send_part(&mut self) -> Result<()> {
        // The next part's buffer is allocated whole: growing it from a small one would copy
        // its bytes again and again, with two buffers alive at each step.
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.dir.part_size));
        let max_in_flight = self.dir.parts_in_flight.max(1);
        let multipart = self.dir.multipart.clone();
        let path = self.path.clone();
        let url = self.url();
        let dir = self.dir;
        let upload = self.start()?;
        while upload.in_flight.len() >= max_in_flight {
            wait_oldest(dir, upload, &url)?;
        }
        let index = upload.done.len() + upload.in_flight.len();
        let id = upload.id.clone();
        let task = dir.runtime.spawn(async move {
            multipart
                .put_part(&path, &id, index, PutPayload::from(data))
                .await
        });
        upload.in_flight.push_back(task);
        Ok(())
    }

    fn commit_inner(&mut self) -> Result<()> {
        if let Some(message) = &self.failed {
            return Err(Error::invalid(message.clone()));
        }
        let url = self.url();
        if self.upload.is_none() {
            // Smaller than a part: one put, atomic by itself.
            let data = std::mem::take(&mut self.buffer);
            let objects = self.dir.objects.clone();
            let path = self.path.clone();
            self.dir.block_on(async move {
                objects
                    .put(&path, PutPayload::from(data))
                    .await
                    .map_err(|e| remote_error(&url, e))
            })?;
            return Ok(());
        }
        if !self.buffer.is_empty() {
            self.send_part()?;
        }
        let dir = self.dir;
        let path = self.path.clone();
        let size = self.size;
        let upload = self.start()?;
        while !upload.in_flight.is_empty() {
            wait_oldest(dir, upload, &url)?;
        }
        let multipart = dir.multipart.clone();
        let objects = dir.objects.clone();
        let id = upload.id.clone();
        let parts = std::mem::take(&mut upload.done);
        let marker = upload.marker.clone();
        let expected = Expected {
            size,
            parts: parts.len(),
            start_took: upload.start_took,
        };
        dir.block_on(async move {
            if let Err(e) = multipart.complete_multipart(&path, &id, parts).await {
                let failed = remote_error(&url, e);
                match check_completed(objects.as_ref(), &path, &marker, &expected).await {
                    Ok(()) => tracing::warn!(
                        "Completing the upload of {url} failed ({}), but an earlier attempt \
                         of the request did complete it: the object is there, whole",
                        failed.report()
                    ),
                    Err(why) => return Err(not_completed(failed, &why)),
                }
            }
            if let Err(e) = objects.delete(&marker).await {
                // Harmless: a marker whose upload is complete is removed by a later cleanup.
                tracing::warn!("Could not delete the upload marker {marker}: {e}");
            }
            Ok::<_, Error>(())
        })?;
        self.upload = None;
        Ok(())
    }

    /// Aborts the upload (its parts are deleted by the server) and removes its marker.
    fn abort_inner(&mut self) -> Result<()> {
        self.buffer = Vec::new();
        let Some(upload) = self.upload.take() else {
            return Ok(());
        };
        for task in &upload.in_flight {
            task.abort();
        }
        let multipart = self.dir.multipart.clone();
        let objects = self.dir.objects.clone();
        let path = self.path.clone();
        let url = self.url();
        tracing::debug!("Aborting the multipart upload {} of {url}", upload.id);
        self.dir.block_on(async move {
            multipart
                .abort_multipart(&path, &upload.id)
                .await
                .map_err(|e| remote_error(&url, e))?;
            objects
                .delete(&upload.marker)
                .await
                .map_err(|e| remote_error(&url, e))
        })
    }
}

/// What a completed upload made: an object of `size` bytes from `parts` parts, dated no
/// earlier than its marker less `start_took` (and a second, the dates' resolution).
struct Expected {
    size: u64,
    parts: usize,
    start_took: Duration,
}

/// Whether the object at `path` is the one the upload of `marker` completed, after the
/// request completing it failed (a retry whose first attempt succeeded fails: the upload is
/// gone). `Err` says why it is not, or cannot be told to be.
///
/// The object must be there with the size written, no older than the upload (S3 dates an
/// object of a multipart upload at the upload's creation, others at its completion; the
/// marker was put just after the creation, on the same clock), and an S3 multipart e-tag
/// (`"<md5>-<parts>"`) must count as many parts. An older object of the same name and size
/// fails the date check.
async fn check_completed(
    objects: &dyn ObjectStore,
    path: &ObjectPath,
    marker: &ObjectPath,
    expected: &Expected,
) -> std::result::Result<(), String> {
    let object = match objects.head(path).await {
        Ok(meta) => meta,
        Err(e) if super::error::is_not_found(&e) => return Err("the object is not there".into()),
        Err(e) => return Err(format!("the object could not be checked: {e}")),
    };
    if object.size != expected.size {
        return Err(format!(
            "the object there has {} bytes, not the {} written",
            object.size, expected.size
        ));
    }
    if let Some(parts) = object.e_tag.as_deref().and_then(multipart_e_tag_parts) {
        if parts != expected.parts {
            return Err(format!(
                "the object there was uploaded in {parts} parts, not {}",
                expected.parts
            ));
        }
    }
    let began = match objects.head(marker).await {
        Ok(meta) => meta.last_modified,
        Err(e) => {
            return Err(format!(
                "the upload's marker {marker} could not be read: {e}"
            ))
        }
    };
    let earliest = SystemTime::from(began) - (expected.start_took + Duration::from_secs(1));
    if SystemTime::from(object.last_modified) < earliest {
        return Err(format!(
            "the object there is older than this upload (modified {}, the upload began {began})",
            object.last_modified
        ));
    }
    Ok(())
}

/// The number of parts an S3 multipart e-tag (`"<md5>-<parts>"`) counts; `None` for any
/// other e-tag.
fn multipart_e_tag_parts(e_tag: &str) -> Option<usize> {
    let (md5, parts) = e_tag.trim_matches('"').rsplit_once('-')?;
    if md5.len() != 32 || !md5.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    parts.parse().ok()
}

/// The error of a completion that failed and whose object is not the upload's: the
/// server's answer and what the check found.
fn not_completed(failed: Error, why: &str) -> Error {
    match failed {
        Error::Remote {
            url,
            reason,
            source,
        } => Error::Remote {
            url,
            reason: format!("completing the upload failed: {reason}; {why}"),
            source,
        },
        other => other,
    }
}

/// Waits for the oldest part in flight and records it.
fn wait_oldest(dir: &ObjectStoreDir, upload: &mut Upload, url: &str) -> Result<()> {
    let Some(task) = upload.in_flight.pop_front() else {
        return Ok(());
    };
    let part = dir
        .block_on(task)
        .map_err(|e| Error::Remote {
            url: url.to_string(),
            reason: format!("a part upload did not finish: {e}"),
            source: None,
        })?
        .map_err(|e| remote_error(url, e))?;
    upload.done.push(part);
    Ok(())
}

impl Write for ObjectWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(message) = &self.failed {
            return Err(io::Error::other(message.clone()));
        }
        let room = self.dir.part_size - self.buffer.len();
        let n = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..n]);
        self.size += n as u64;
        if self.buffer.len() >= self.dir.part_size {
            if let Err(e) = self.send_part() {
                let message = e.report().to_string();
                self.failed = Some(message.clone());
                return Err(io::Error::other(message));
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl PendingWrite for ObjectWrite<'_> {
    fn commit(mut self: Box<Self>) -> Result<()> {
        self.finished = true;
        let result = self.commit_inner();
        if result.is_err() {
            if let Err(e) = self.abort_inner() {
                tracing::warn!(
                    "Could not abort the upload of {}: {}",
                    self.url(),
                    e.report()
                );
            }
        }
        result
    }

    fn abort(mut self: Box<Self>) -> Result<()> {
        self.finished = true;
        self.abort_inner()
    }
}

impl Drop for ObjectWrite<'_> {
    fn drop(&mut self) {
        if !self.finished {
            if let Err(e) = self.abort_inner() {
                tracing::warn!(
                    "Could not abort the upload of {}: {}",
                    self.url(),
                    e.report()
                );
            }
        }
    }
}

/// The upload id and object path a marker records.
pub(super) fn parse_marker(bytes: &[u8]) -> Option<(MultipartId, ObjectPath)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines();
    let id = lines.next()?.trim();
    let path = lines.next()?.trim();
    if id.is_empty() || path.is_empty() {
        return None;
    }
    Some((id.to_string(), ObjectPath::parse(path).ok()?))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use object_store::memory::InMemory;
    use object_store::multipart::MultipartStore;
    use object_store::PutResult;

    use super::*;
    use crate::store::Store;

    /// A multipart store whose completions fail like a retried request whose first attempt
    /// was lost: after completing the upload (`perform`), or without.
    #[derive(Debug)]
    struct FailingComplete {
        inner: Arc<InMemory>,
        perform: AtomicBool,
    }

    #[async_trait::async_trait]
    impl MultipartStore for FailingComplete {
        async fn create_multipart(&self, path: &ObjectPath) -> object_store::Result<MultipartId> {
            self.inner.create_multipart(path).await
        }

        async fn put_part(
            &self,
            path: &ObjectPath,
            id: &MultipartId,
            part_idx: usize,
            data: PutPayload,
        ) -> object_store::Result<PartId> {
            self.inner.put_part(path, id, part_idx, data).await
        }

        async fn complete_multipart(
            &self,
            path: &ObjectPath,
            id: &MultipartId,
            parts: Vec<PartId>,
        ) -> object_store::Result<PutResult> {
            if self.perform.load(Ordering::SeqCst) {
                self.inner.complete_multipart(path, id, parts).await?;
            }
            Err(object_store::Error::Generic {
                store: "S3",
                source: "Server returned non-2xx status code: 500 Internal Server Error".into(),
            })
        }

        async fn abort_multipart(
            &self,
            path: &ObjectPath,
            id: &MultipartId,
        ) -> object_store::Result<()> {
            self.inner.abort_multipart(path, id).await
        }
    }

    /// A store of `s3://bucket/run` in memory whose completions fail, having completed the
    /// upload when `perform`.
    fn failing_store(perform: bool) -> (ObjectStoreDir, Arc<InMemory>) {
        let memory = Arc::new(InMemory::new());
        let multipart = Arc::new(FailingComplete {
            inner: memory.clone(),
            perform: AtomicBool::new(perform),
        });
        let store = ObjectStoreDir::builder("s3://bucket/run")
            .part_size(5 << 20)
            .build_with((memory.clone(), multipart))
            .unwrap();
        (store, memory)
    }

    /// 11 MiB: three parts of 5 MiB.
    fn content() -> Vec<u8> {
        (0..11u32 << 20).map(|i| (i % 251) as u8).collect()
    }

    fn save(store: &ObjectStoreDir, bytes: &[u8]) -> Result<()> {
        store.write("model.pth", &mut |w| {
            w.write_all(bytes).map_err(|e| Error::io("model.pth", e))
        })
    }

    fn object(memory: &InMemory, key: &str) -> Option<Vec<u8>> {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            match memory.get(&ObjectPath::from(key)).await {
                Ok(got) => Some(got.bytes().await.unwrap().to_vec()),
                Err(_) => None,
            }
        })
    }

    #[test]
    fn a_failed_completion_that_did_complete_the_upload_commits() {
        let (store, memory) = failing_store(true);
        let bytes = content();
        save(&store, &bytes).unwrap();
        assert_eq!(
            object(&memory, "run/model.pth").as_deref(),
            Some(&bytes[..])
        );
        // The marker is gone: nothing but the checkpoint is left.
        assert_eq!(store.list_objects().unwrap().len(), 1);
    }

    #[test]
    fn a_failed_completion_without_the_object_is_an_error_naming_it() {
        let (store, memory) = failing_store(false);
        let error = save(&store, &content()).unwrap_err().report().to_string();
        assert!(error.starts_with("s3://bucket/run/model.pth: "), "{error}");
        assert!(error.contains("completing the upload failed"), "{error}");
        assert!(error.contains("the object is not there"), "{error}");
        assert!(object(&memory, "run/model.pth").is_none());
        // The upload was aborted and its marker deleted.
        assert!(store.list_objects().unwrap().is_empty());
    }

    #[test]
    fn an_older_object_of_the_same_name_and_size_is_not_taken_for_the_upload() {
        let (store, memory) = failing_store(false);
        let old = vec![7u8; 11 << 20];
        save_plain(&memory, "run/model.pth", &old);
        // Past the second's resolution of the objects' dates.
        std::thread::sleep(Duration::from_millis(2200));
        let error = save(&store, &content()).unwrap_err().report().to_string();
        assert!(error.contains("older than this upload"), "{error}");
        assert_eq!(object(&memory, "run/model.pth"), Some(old));
    }

    #[test]
    fn a_failed_completion_with_another_size_there_is_an_error() {
        let (store, memory) = failing_store(false);
        save_plain(&memory, "run/model.pth", b"old");
        let error = save(&store, &content()).unwrap_err().report().to_string();
        assert!(
            error.contains("the object there has 3 bytes, not the 11534336 written"),
            "{error}"
        );
    }

    fn save_plain(memory: &InMemory, key: &str, bytes: &[u8]) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime
            .block_on(memory.put(&ObjectPath::from(key), PutPayload::from(bytes.to_vec())))
            .unwrap();
    }

    #[test]
    fn s3_multipart_e_tags_count_their_parts() {
        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        assert_eq!(multipart_e_tag_parts(&format!("\"{md5}-64\"")), Some(64));
        assert_eq!(multipart_e_tag_parts(&format!("\"{md5}\"")), None);
        assert_eq!(multipart_e_tag_parts("\"17\""), None);
        assert_eq!(multipart_e_tag_parts("W/\"x-2\""), None);
    }
}
