//! A streaming write to an object store: bytes are cut into parts uploaded while the writer
//! goes on (a multipart upload, at most `parts_in_flight` parts in memory besides the one
//! being filled), completed at commit and aborted otherwise. A file smaller than one part is
//! a single put. Either way the object appears whole or not at all.
//!
//! A marker object (`<TEMP_PREFIX><owner>-<unique>-<name>.upload`, holding the upload id)
//! lives beside the checkpoints while an upload is open, so that the upload of a writer that
//! crashed can be found and aborted later ([`super::ObjectStoreDir`]'s
//! `remove_stale_temporaries`) without touching another writer's upload in progress.

use std::collections::VecDeque;
use std::io::{self, Write};

use object_store::multipart::PartId;
use object_store::path::Path as ObjectPath;
use object_store::{MultipartId, ObjectStoreExt, PutPayload};
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
}

/// The [`PendingWrite`] of an [`ObjectStoreDir`].
pub(super) struct ObjectWrite<'a> {
    dir: &'a ObjectStoreDir,
    path: ObjectPath,
    name: String,
    buffer: Vec<u8>,
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
            });
        }
        self.upload
            .as_mut()
            .ok_or_else(|| Error::invalid("the upload was not started"))
    }

    /// Uploads the buffer as the next part, waiting first for the oldest part when
    /// `parts_in_flight` are already under way.
    fn send_part(&mut self) -> Result<()> {
        let data = std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(self.dir.part_size.min(1 << 20)),
        );
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
        let upload = self.start()?;
        while !upload.in_flight.is_empty() {
            wait_oldest(dir, upload, &url)?;
        }
        let multipart = dir.multipart.clone();
        let objects = dir.objects.clone();
        let id = upload.id.clone();
        let parts = std::mem::take(&mut upload.done);
        let marker = upload.marker.clone();
        dir.block_on(async move {
            multipart
                .complete_multipart(&path, &id, parts)
                .await
                .map_err(|e| remote_error(&url, e))?;
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
