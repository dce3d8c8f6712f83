//! [`ObjectStoreDir`]: a prefix of an object store (`s3://bucket/prefix`) as a [`Store`],
//! through the `object_store` crate. The library API is synchronous: the store owns a small
//! tokio runtime and blocks on it.

mod error;
mod fetch;
mod partial;
mod upload;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::{
    check_basename, temp_writer_is_gone, Entry, Location, PendingWrite, Precondition, Store,
    MAX_SMALL_FILE, TEMP_PREFIX,
};
use crate::error::{Error, Result, TagProblem};
use crate::resolve::{default_cache_dir, Progress};
use error::{is_not_found, remote_error};
pub(crate) use fetch::fetch_url;
pub(crate) use partial::partial_url;
use upload::{parse_marker, ObjectWrite, MARKER_SUFFIX};

/// The default size of an upload part: large enough for few requests, small enough that
/// `parts_in_flight` of them are a modest amount of memory.
const DEFAULT_PART_SIZE: usize = 16 << 20;
/// The default number of parts uploaded (or ranges downloaded) at once.
const DEFAULT_PARTS_IN_FLIGHT: usize = 8;
/// S3's smallest part (all but the last).
const MIN_PART_SIZE: usize = 5 << 20;

/// A prefix of an object store as a checkpoint directory: `s3://bucket/prefix` (S3 and
/// compatible servers), `gs://` and `az://` with the `gcp` and `azure` features.
///
/// - Writes stream into a multipart upload (memory: part size × parts in flight) that is
///   completed at commit and aborted on error; an object appears whole or not at all.
///   Uploads abandoned by a crashed writer are aborted by a later
///   [`Store::remove_stale_temporaries`] (which every save runs).
/// - `last_checkpoint` is written with a conditional put ([`Store::write_small`]).
/// - Reads for the loaders go through the download cache with parallel range requests
///   ([`Store::local_file`]); a cached copy is used again while the object's e-tag is the
///   same. [`ObjectStoreDir::partial_file`] gives ckpt's readers a copy that fetches only
///   the ranges they read (a torch archive's directory and pickle, a safetensors header,
///   the tensors that are copied out).
///
/// Configuration comes from the environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP=true` for a local endpoint, ...),
/// and from [`ObjectStoreDirBuilder::with_config`] in code.
///
/// ```no_run
/// use std::sync::Arc;
/// use ckpt::store::ObjectStoreDir;
/// use ckpt::{shared, Checkpointer, Dict, StateDict, StateDictModel};
/// let store = ObjectStoreDir::builder("s3://bucket/run1")
///     .with_config("aws_endpoint", "http://127.0.0.1:9000")
///     .with_config("aws_allow_http", "true")
///     .build()?;
/// let model = shared(StateDictModel::new(StateDict::new()));
/// let checkpointer = Checkpointer::with_store(model, Arc::new(store));
/// checkpointer.save("model_final", Dict::new())?;
/// # Ok::<(), ckpt::Error>(())
/// ```
pub struct ObjectStoreDir {
    objects: Arc<dyn ObjectStore>,
    multipart: Arc<dyn MultipartStore>,
    /// `s3://bucket`, without a trailing slash.
    root: String,
    /// The key prefix, without slashes around it; empty for the bucket's top level.
    prefix: String,
    runtime: Arc<tokio::runtime::Runtime>,
    part_size: usize,
    parts_in_flight: usize,
    cache_dir: PathBuf,
    /// Bytes downloaded so far, whole objects and ranges.
    fetched: Arc<AtomicU64>,
    progress: Option<Arc<dyn Progress>>,
}

impl fmt::Debug for ObjectStoreDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreDir")
            .field("url", &self.url())
            .field("part_size", &self.part_size)
            .field("parts_in_flight", &self.parts_in_flight)
            .finish()
    }
}

/// How an [`ObjectStoreDir`] is made: its URL, settings of the object store client, part
/// size and parallelism, download cache.
#[derive(Debug, Clone)]
pub struct ObjectStoreDirBuilder {
    url: String,
    config: Vec<(String, String)>,
    part_size: usize,
    parts_in_flight: usize,
    cache_dir: Option<PathBuf>,
    retry: object_store::RetryConfig,
    progress: Option<Arc<dyn Progress>>,
}

impl ObjectStoreDirBuilder {
    /// Reports the progress of whole-object downloads (into the download cache) to
    /// `progress`: bytes written so far and the object's size.
    ///
    /// ```no_run
    /// use ckpt::store::ObjectStoreDir;
    /// let store = ObjectStoreDir::builder("s3://bucket/run1")
    ///     .progress(|done: u64, total: Option<u64>| eprintln!("{done} of {total:?} bytes"))
    ///     .build()?;
    /// # Ok::<(), ckpt::Error>(())
    /// ```
    pub fn progress(self, progress: impl Progress + 'static) -> Self {
        self.shared_progress(Some(Arc::new(progress)))
    }

    /// [`ObjectStoreDirBuilder::progress`] of a callback shared with others, or none.
    pub(crate) fn shared_progress(mut self, progress: Option<Arc<dyn Progress>>) -> Self {
        self.progress = progress;
        self
    }

    /// How often a failed request is retried (with backoff) before the error is returned
    /// (10 by default), and for how long at most (3 minutes by default).
    pub fn retries(mut self, max_retries: usize, timeout: std::time::Duration) -> Self {
        self.retry.max_retries = max_retries;
        self.retry.retry_timeout = timeout;
        self
    }

    /// Sets a client setting by its `object_store` name (`aws_endpoint`,
    /// `aws_access_key_id`, `aws_secret_access_key`, `aws_region`, `aws_allow_http`, ...,
    /// `google_service_account`, `azure_storage_account_name`, ...), over the environment's.
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }

    /// The size of each uploaded part and downloaded range (at least 5 MiB, S3's smallest
    /// part; 16 MiB by default).
    pub fn part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(MIN_PART_SIZE);
        self
    }

    /// How many parts are uploaded (or ranges downloaded) at once (8 by default).
    pub fn parts_in_flight(mut self, parts: usize) -> Self {
        self.parts_in_flight = parts.max(1);
        self
    }

    /// Where local copies of objects are kept for the readers ([`default_cache_dir`] by
    /// default).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Makes the store. No request is sent: a wrong endpoint or credentials show at the
    /// first use, in an error naming the bucket and key.
    pub fn build(self) -> Result<ObjectStoreDir> {
        let (scheme, bucket, _) = split_url(&self.url)?;
        // TLS through rustls with ring (the client is built without a default provider);
        // a provider the program installed first is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = build_client(&self.url, scheme, bucket, &self.config, &self.retry)?;
        self.build_with(client)
    }

    /// Makes the store over `client` (the objects of the URL's bucket).
    fn build_with(self, (objects, multipart): Client) -> Result<ObjectStoreDir> {
        let (scheme, bucket, prefix) = split_url(&self.url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ckpt-object-store")
            .enable_all()
            .build()
            .map_err(|e| Error::io("", e))?;
        Ok(ObjectStoreDir {
            objects,
            multipart,
            root: format!("{scheme}{bucket}"),
            prefix: prefix.to_string(),
            runtime: Arc::new(runtime),
            part_size: self.part_size,
            parts_in_flight: self.parts_in_flight,
            cache_dir: self.cache_dir.unwrap_or_else(default_cache_dir),
            fetched: Arc::new(AtomicU64::new(0)),
            progress: self.progress,
        })
    }
}

/// Runs `future` to its end on `runtime` (see [`ObjectStoreDir::block_on`]).
fn block_on<F>(runtime: &tokio::runtime::Runtime, future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(future))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    } else {
        runtime.block_on(future)
    }
}

/// Splits `s3://bucket/a/b/` into `("s3://", "bucket", "a/b")`.
fn split_url(url: &str) -> Result<(&'static str, &str, &str)> {
    let scheme = super::open::OBJECT_SCHEMES
        .into_iter()
        .find(|scheme| url.starts_with(scheme))
        .ok_or_else(|| Error::invalid_path(url, "not an object store URL (s3://, gs://, az://)"))?;
    let rest = &url[scheme.len()..];
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::invalid_path(url, "names no bucket"));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|part| matches!(part, "." | "..")) {
        return Err(Error::invalid_path(
            url,
            "'.' and '..' are not allowed in a key",
        ));
    }
    Ok((scheme, bucket, prefix))
}

type Client = (Arc<dyn ObjectStore>, Arc<dyn MultipartStore>);

fn build_client(
    url: &str,
    scheme: &str,
    bucket: &str,
    config: &[(String, String)],
    retry: &object_store::RetryConfig,
) -> Result<Client> {
    let bad_config = |e: object_store::Error| Error::invalid_path(url, format!("{e}"));
    match scheme {
        "s3://" => {
            use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry.clone());
            for (key, value) in config {
                let key: AmazonS3ConfigKey = key.parse().map_err(bad_config)?;
                builder = builder.with_config(key, value);
            }
            let store = Arc::new(builder.build().map_err(bad_config)?);
            Ok((store.clone(), store))
        }
        #[cfg(feature = "gcp")]
        "gs://" => {
            use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
            let mut builder = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry.clone());
            for (key, value) in config {
                let key: GoogleConfigKey = key.parse().map_err(bad_config)?;
                builder = builder.with_config(key, value);
            }
            let store = Arc::new(builder.build().map_err(bad_config)?);
            Ok((store.clone(), store))
        }
        #[cfg(feature = "azure")]
        "az://" => {
            use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
            let mut builder = MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket)
                .with_retry(retry.clone());
            for (key, value) in config {
                let key: AzureConfigKey = key.parse().map_err(bad_config)?;
                builder = builder.with_config(key, value);
            }
            let store = Arc::new(builder.build().map_err(bad_config)?);
            Ok((store.clone(), store))
        }
        _ => Err(Error::unsupported(format!(
            "{url}: ckpt was built without the feature for {scheme} (gcp, azure)"
        ))),
    }
}

impl ObjectStoreDir {
    /// The store of `url` (`s3://bucket/prefix`), configured from the environment.
    pub fn from_url(url: &str) -> Result<ObjectStoreDir> {
        ObjectStoreDir::builder(url).build()
    }

    /// A builder for the store of `url`, to configure it in code.
    pub fn builder(url: impl Into<String>) -> ObjectStoreDirBuilder {
        ObjectStoreDirBuilder {
            url: url.into(),
            config: Vec::new(),
            part_size: DEFAULT_PART_SIZE,
            parts_in_flight: DEFAULT_PARTS_IN_FLIGHT,
            cache_dir: None,
            retry: object_store::RetryConfig::default(),
            progress: None,
        }
    }

    /// Bytes this store downloaded so far (whole objects and ranges of partial copies).
    pub fn bytes_fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// A local file of the object `name` for ckpt's readers ([`crate::format::load_with`]
    /// and what is built on it), which fetches only what they read: a torch archive's end
    /// records, central directory, pickle and small records, and each storage record's
    /// local header; a safetensors file's header; then the bytes of each tensor when they
    /// are first read (copied out, loaded into a model). Other formats are fetched whole.
    ///
    /// The file has the object's size; what was not fetched reads as zeros to any other
    /// program, so give it to ckpt's readers only. The ranges fetched are kept in the
    /// download cache (`partial/s3/<bucket>/<key>`, with the list of its ranges beside it)
    /// and used again while the object's e-tag is the same. A whole copy already in the cache is
    /// returned instead.
    ///
    /// ```no_run
    /// use ckpt::store::ObjectStoreDir;
    /// let store = ObjectStoreDir::from_url("s3://bucket/run1")?;
    /// let path = store.partial_file("model_final.pth")?;
    /// let value = ckpt::format::load(&path)?; // the pickle and headers only
    /// let state = ckpt::StateDict::from_value(&value)?;
    /// if let Some(weight) = state.get("fc.weight") {
    ///     let owned = weight.to_owned_as(weight.dtype())?; // its bytes fetched now
    /// }
    /// println!("{} bytes fetched", store.bytes_fetched());
    /// # Ok::<(), ckpt::Error>(())
    /// ```
    pub fn partial_file(&self, name: &str) -> Result<PathBuf> {
        check_basename(name)?;
        partial::open(self, &self.object_path(name), &self.url_of(name))
    }

    /// The store's URL (`s3://bucket/prefix`).
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            self.root.clone()
        } else {
            format!("{}/{}", self.root, self.prefix)
        }
    }

    /// Another handle on this store's client, runtime and settings.
    fn share(&self) -> ObjectStoreDir {
        ObjectStoreDir {
            objects: self.objects.clone(),
            multipart: self.multipart.clone(),
            root: self.root.clone(),
            prefix: self.prefix.clone(),
            runtime: self.runtime.clone(),
            part_size: self.part_size,
            parts_in_flight: self.parts_in_flight,
            cache_dir: self.cache_dir.clone(),
            fetched: self.fetched.clone(),
            progress: self.progress.clone(),
        }
    }

    /// The URL of the file `name`.
    fn url_of(&self, name: &str) -> String {
        format!("{}/{name}", self.url())
    }

    fn object_path(&self, name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    fn prefix_path(&self) -> Option<ObjectPath> {
        (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()))
    }

    /// Runs `future` to its end on the store's runtime. Called from inside another tokio
    /// runtime (an async program), it runs on a thread of its own: blocking a runtime's
    /// thread on another runtime is not allowed.
    fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        block_on(&self.runtime, future)
    }

    /// Every object directly under the prefix (not in "subdirectories").
    fn list_objects(&self) -> Result<Vec<object_store::ObjectMeta>> {
        let objects = self.objects.clone();
        let prefix = self.prefix_path();
        let url = self.url();
        self.block_on(async move {
            objects
                .list_with_delimiter(prefix.as_ref())
                .await
                .map(|listing| listing.objects)
                .map_err(|e| remote_error(&url, e))
        })
    }
}

impl Store for ObjectStoreDir {
    fn location(&self, name: &str) -> Location {
        Location::Url(self.url_of(name))
    }

    fn create(&self, name: &str) -> Result<Box<dyn PendingWrite + '_>> {
        check_basename(name)?;
        Ok(Box::new(ObjectWrite::new(self, name)))
    }

    fn read_small(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.read_small_versioned(name)?.map(|(bytes, _)| bytes))
    }

    fn has_versions(&self) -> bool {
        true
    }

    fn read_small_versioned(&self, name: &str) -> Result<Option<(Vec<u8>, Option<String>)>> {
        check_basename(name)?;
        let objects = self.objects.clone();
        let path = self.object_path(name);
        let url = self.url_of(name);
        let too_large = || Error::BadTag {
            tag: PathBuf::from(&url),
            problem: TagProblem::TooLarge {
                max: MAX_SMALL_FILE,
            },
        };
        let got = self.block_on(async {
            let result = match objects.get(&path).await {
                Ok(result) => result,
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(remote_error(&url, e)),
            };
            if result.meta.size > MAX_SMALL_FILE {
                return Err(too_large());
            }
            let version = result.meta.e_tag.clone();
            let bytes = result.bytes().await.map_err(|e| remote_error(&url, e))?;
            Ok(Some((bytes.to_vec(), version)))
        })?;
        Ok(got)
    }

    fn write_small(
        &self,
        name: &str,
        bytes: &[u8],
        precondition: &Precondition,
    ) -> Result<Option<String>> {
        check_basename(name)?;
        let mode = match precondition {
            Precondition::None => PutMode::Overwrite,
            Precondition::Absent => PutMode::Create,
            Precondition::Version(e_tag) => PutMode::Update(UpdateVersion {
                e_tag: Some(e_tag.clone()),
                version: None,
            }),
        };
        let objects = self.objects.clone();
        let path = self.object_path(name);
        let url = self.url_of(name);
        let payload = PutPayload::from(bytes.to_vec());
        let result = self.block_on(async move {
            objects
                .put_opts(&path, payload, PutOptions::from(mode))
                .await
                .map_err(|e| remote_error(&url, e))
        })?;
        Ok(result.e_tag)
    }

    fn exists(&self, name: &str) -> Result<bool> {
        check_basename(name)?;
        let objects = self.objects.clone();
        let path = self.object_path(name);
        let url = self.url_of(name);
        self.block_on(async move {
            match objects.head(&path).await {
                Ok(_) => Ok(true),
                Err(e) if is_not_found(&e) => Ok(false),
                Err(e) => Err(remote_error(&url, e)),
            }
        })
    }

    fn list_entries(&self) -> Result<Vec<Entry>> {
        let mut entries: Vec<Entry> = self
            .list_objects()?
            .into_iter()
            .filter_map(|meta| {
                let name = meta.location.filename()?.to_string();
                (!name.starts_with(TEMP_PREFIX))
                    .then(|| Entry::new(name, meta.size).with_modified(meta.last_modified.into()))
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    fn remove(&self, name: &str) -> Result<()> {
        check_basename(name)?;
        let objects = self.objects.clone();
        let path = self.object_path(name);
        let url = self.url_of(name);
        self.block_on(async move {
            match objects.delete(&path).await {
                Ok(()) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(remote_error(&url, e)),
            }
        })
    }

    /// Aborts the multipart uploads whose marker says their writer is gone (a process of
    /// this host that no longer runs, or any writer of a marker a day old), and deletes the
    /// marker. Uploads of live writers, here or on another host, are kept.
    fn remove_stale_temporaries(&self) -> Result<()> {
        let stale: Vec<ObjectPath> = self
            .list_objects()?
            .into_iter()
            .filter(|meta| {
                let Some(name) = meta.location.filename() else {
                    return false;
                };
                let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
                    return false;
                };
                name.ends_with(MARKER_SUFFIX)
                    && temp_writer_is_gone(rest, Some(meta.last_modified.into()))
            })
            .map(|meta| meta.location)
            .collect();
        for marker in stale {
            let objects = self.objects.clone();
            let multipart = self.multipart.clone();
            let url = format!("{}/{marker}", self.root);
            self.block_on(async move {
                let record = match objects.get(&marker).await {
                    Ok(got) => got.bytes().await.map_err(|e| remote_error(&url, e))?,
                    Err(e) if is_not_found(&e) => return Ok(()),
                    Err(e) => return Err(remote_error(&url, e)),
                };
                if let Some((id, path)) = parse_marker(&record) {
                    match multipart.abort_multipart(&path, &id).await {
                        Ok(()) => tracing::info!("Aborted the abandoned upload {id} of {path}"),
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => return Err(remote_error(&url, e)),
                    }
                }
                match objects.delete(&marker).await {
                    Ok(()) => Ok(()),
                    Err(e) if is_not_found(&e) => Ok(()),
                    Err(e) => Err(remote_error(&url, e)),
                }
            })?;
        }
        Ok(())
    }

    fn local_file(&self, name: &str) -> Result<PathBuf> {
        check_basename(name)?;
        fetch::fetch(self, &self.object_path(name), &self.url_of(name))
    }
}
