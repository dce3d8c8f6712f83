//! [`Checkpointer`]: saves a model and its checkpointables to a directory and loads them
//! back, as fvcore's `Checkpointer` (detectron2's base checkpointer) does.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;

use crate::cast::can_cast;
use crate::detach::detach_values;
use crate::dtype::DType;
use crate::error::{Error, Result, ResultExt, TagProblem};
use crate::format::{self, LoadOptions, SaveOptions};
use crate::incompatible::{
    warn_unmissable, DTypeMismatch, IncompatibleKeys, LoadReport, ShapeMismatch,
};
use crate::model::{lock, Checkpointable, Model, Shared};
use crate::resolve::Resolver;
use crate::store::{check_basename, LocalDir, Store, WriterLock};
use crate::value::{Dict, Key, StateDict, Value};

/// The file naming the last checkpoint saved in a directory.
pub const LAST_CHECKPOINT: &str = "last_checkpoint";

/// Which checkpointables a load restores besides the model (Python's `checkpointables`
/// argument: `None` for all, a list of keys otherwise).
///
/// ```
/// use ckpt::Checkpointables;
/// assert_eq!(Checkpointables::default(), Checkpointables::All);
/// let some = Checkpointables::only(["optimizer", "scheduler"]);
/// assert!(some.includes("optimizer") && !some.includes("ema"));
/// assert!(!Checkpointables::None.includes("optimizer"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Checkpointables {
    /// Every registered checkpointable present in the file (Python's `None`).
    #[default]
    All,
    /// The model only (Python's `[]`).
    None,
    /// These keys, each of which must be registered (Python's `["optimizer", ...]`).
    Only(Vec<String>),
}

impl Checkpointables {
    /// [`Checkpointables::Only`] these keys.
    pub fn only<I, S>(keys: I) -> Checkpointables
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Checkpointables::Only(keys.into_iter().map(Into::into).collect())
    }

    /// Whether the checkpointable registered under `key` is restored.
    pub fn includes(&self, key: &str) -> bool {
        match self {
            Checkpointables::All => true,
            Checkpointables::None => false,
            Checkpointables::Only(keys) => keys.iter().any(|k| k == key),
        }
    }
}

/// The parts of loading that a specialised checkpointer (detectron2's
/// `DetectionCheckpointer`) changes: how a file becomes a checkpoint dict, how the
/// checkpoint's model entry becomes the state to load, and what the report keeps.
pub trait CheckpointHooks: Send + Sync {
    /// Reads the file at `path` into the checkpoint's top-level dict. The default reads any
    /// supported format and requires a dict.
    fn read_file(&self, path: &Path) -> Result<Dict> {
        read_checkpoint_file(path)
    }

    /// [`CheckpointHooks::read_file`] with reading options: a resume asks for
    /// [`LoadOptions::verify_crc32_on_copy`]. The default ignores them and calls `read_file`.
    fn read_file_with(&self, path: &Path, options: &LoadOptions) -> Result<Dict> {
        let _ = options;
        self.read_file(path)
    }

    /// Takes the model's entry (`model_key`, `"model"` unless the checkpointer was told
    /// otherwise) out of `checkpoint` and returns the state to load into `model` (before the
    /// shape checks). The default takes the entry out (every value must be a tensor or a
    /// numpy array) and removes a `module.` prefix that every key has.
    fn model_state(
        &self,
        checkpoint: &mut Dict,
        model_key: &str,
        model: &dyn Model,
    ) -> Result<StateDict> {
        let _ = model;
        take_model_state(checkpoint, model_key)
    }

    /// Adjusts the report of the model load before it is logged.
    fn adjust_report(&self, report: &mut IncompatibleKeys, model: &dyn Model) {
        let _ = (report, model);
    }
}

/// The hooks of a plain checkpointer.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DefaultHooks;

impl CheckpointHooks for DefaultHooks {
    fn read_file_with(&self, path: &Path, options: &LoadOptions) -> Result<Dict> {
        read_checkpoint_file_with(path, options)
    }
}

/// Reads a checkpoint file of any supported format; the top level must be a dict.
pub(crate) fn read_checkpoint_file(path: &Path) -> Result<Dict> {
    read_checkpoint_file_with(path, &LoadOptions::default())
}

/// [`read_checkpoint_file`] with reading options.
fn read_checkpoint_file_with(path: &Path, options: &LoadOptions) -> Result<Dict> {
    match format::load_with(path, options)?.value {
        Value::Dict(dict) => Ok(dict),
        other => Err(Error::format(format!(
            "expected the checkpoint to be a dict, found a {}",
            other.type_name()
        ))
        .in_file(path)),
    }
}

/// Takes the entry `key` (`"model"`) out of a checkpoint dict as a state dict: every value
/// must be a tensor or a numpy array (the error names the key and the type found), and a
/// `module.` prefix on every key (a model saved while wrapped for data parallelism) is
/// removed.
pub(crate) fn take_model_state(checkpoint: &mut Dict, key: &str) -> Result<StateDict> {
    Ok(strip_prefix_if_present(
        take_model_entry(checkpoint, key)?,
        "module.",
    ))
}

/// Takes the entry `key` (`"model"`) out of a checkpoint dict as a state dict, as it is in
/// the file: every value must be a tensor or a numpy array (the error names the key and the
/// type found).
pub(crate) fn take_model_entry(checkpoint: &mut Dict, key: &str) -> Result<StateDict> {
    let value = checkpoint
        .remove(key)
        .ok_or_else(|| Error::missing_key(key, checkpoint.keys()))?;
    StateDict::from_value(&value).in_entry(key)
}

/// Removes `prefix` from every key when every non-empty key starts with it (also from the
/// module names of `_metadata`), as fvcore's `_strip_prefix_if_present` does.
pub(crate) fn strip_prefix_if_present(state: StateDict, prefix: &str) -> StateDict {
    if !state.keys().all(|k| k.is_empty() || k.starts_with(prefix)) {
        return state;
    }
    let metadata = state
        .metadata
        .map(|meta| strip_metadata_prefix(meta, prefix));
    let mut out: StateDict = state
        .tensors
        .into_iter()
        .map(|(k, t)| (k.strip_prefix(prefix).unwrap_or(&k).to_string(), t))
        .collect();
    out.metadata = metadata;
    out
}

fn strip_metadata_prefix(meta: Value, prefix: &str) -> Value {
    let Value::Dict(mut dict) = meta else {
        return meta;
    };
    let bare = prefix.trim_end_matches('.');
    dict.items = dict
        .items
        .into_iter()
        .map(|(key, v)| {
            let renamed = match &key {
                Key::Str(s) if s == bare => Key::Str(String::new()),
                Key::Str(s) => match s.strip_prefix(prefix) {
                    Some(rest) => Key::Str(rest.to_string()),
                    None => key,
                },
                _ => key,
            };
            (renamed, v)
        })
        .collect();
    Value::Dict(dict)
}

/// Saves and loads a model and named checkpointables: `<name>.pth` files in a save
/// directory, and a `last_checkpoint` file naming the last one saved.
///
/// The model and checkpointables are [`Shared`] handles: the checkpointer locks them only
/// while it reads or restores their state, so training goes on between calls. Do not hold
/// a lock on them while calling the checkpointer (that would deadlock).
///
///
/// Better than Python: saves are atomic (a crash leaves the previous checkpoint and tag
/// intact), a broken `last_checkpoint` is an error instead of a silent fresh start, and a
/// load that fails leaves the model and checkpointables unchanged.
///
/// ```no_run
/// use ckpt::{shared, Checkpointer, Dict, Serde, StateDict, StateDictModel};
/// let model = shared(StateDictModel::new(StateDict::new()));
/// let step = shared(Serde(0u64));
/// let mut checkpointer = Checkpointer::new(model.clone(), "output");
/// checkpointer.add_checkpointable("step", step.clone())?;
/// let extra = checkpointer.resume_or_load(None, true)?; // resumes when output/last_checkpoint exists
/// let start = extra.get("iteration").and_then(|v| v.as_int()).map_or(0, |i| i + 1);
/// checkpointer.save("model_final", Dict::new())?;
/// # Ok::<(), ckpt::Error>(())
/// ```
pub struct Checkpointer {
    model: Shared<dyn Model>,
    store: Option<Arc<dyn Store>>,
    save_to_disk: bool,
    checkpointables: IndexMap<String, Shared<dyn Checkpointable>>,
    hooks: Arc<dyn CheckpointHooks>,
    save_options: SaveOptions,
    model_key: String,
    resolver: Resolver,
    /// Check the crc32 of the checkpoint a resume loads.
    verify_on_resume: bool,
    /// Resume from an older checkpoint when the tagged one cannot be read.
    resume_fallback: bool,
    /// The save directory's writer lock, taken by the first save and held from then on.
    writer_lock: std::sync::Mutex<Option<WriterLock>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("store", &self.store)
            .field("save_to_disk", &self.save_to_disk)
            .field(
                "checkpointables",
                &self.checkpointables.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Checkpointer {
    /// A checkpointer saving to `save_dir`; an empty `save_dir` disables saving, as in
    /// Python. The directory is created on the first save.
    pub fn new<M: Model + 'static>(model: Shared<M>, save_dir: impl AsRef<Path>) -> Checkpointer {
        let dir = save_dir.as_ref();
        let store: Option<Arc<dyn Store>> = if dir.as_os_str().is_empty() {
            None
        } else {
            Some(Arc::new(LocalDir::new(dir)))
        };
        Checkpointer::build(model, store)
    }

    /// A checkpointer saving to any [`Store`] (a directory, a test double, later an object
    /// store).
    pub fn with_store<M: Model + 'static>(model: Shared<M>, store: Arc<dyn Store>) -> Checkpointer {
        Checkpointer::build(model, Some(store))
    }

    fn build<M: Model + 'static>(model: Shared<M>, store: Option<Arc<dyn Store>>) -> Checkpointer {
        let save_options = SaveOptions {
            // fvcore hands torch.save an open file, for which torch names the folder "archive".
            archive_name: Some("archive".to_string()),
            ..SaveOptions::default()
        };
        Checkpointer {
            model,
            store,
            save_to_disk: true,
            checkpointables: IndexMap::new(),
            hooks: Arc::new(DefaultHooks),
            save_options,
            model_key: "model".to_string(),
            resolver: Resolver::new(),
            verify_on_resume: true,
            resume_fallback: true,
            writer_lock: std::sync::Mutex::new(None),
        }
    }

    /// Enables or disables saving (Python's `save_to_disk`; false on non-main processes).
    pub fn save_to_disk(mut self, save_to_disk: bool) -> Checkpointer {
        self.save_to_disk = save_to_disk;
        self
    }

    /// Whether a resume checks the crc32 of every zip record of the checkpoint it loads
    /// (default: true). The check runs as the bytes are copied into the model and the
    /// checkpointables, in the same pass ([`LoadOptions::verify_crc32_on_copy`]); a mismatch
    /// is an [`Error::Checksum`], and a resume then falls back to an older checkpoint (see
    /// [`Checkpointer::resume_fallback`]).
    pub fn verify_on_resume(mut self, verify: bool) -> Checkpointer {
        self.verify_on_resume = verify;
        self
    }

    /// Whether a resume whose tagged checkpoint cannot be read (corrupt, truncated,
    /// missing, a checksum that does not match) loads the newest intact checkpoint of the
    /// save directory instead (default: true). It says so loudly, naming each file it
    /// passed over and why, and lists them in [`LoadReport::skipped`]. With `false` such a
    /// resume is an error. Either way a resume never silently starts from scratch.
    ///
    /// ```
    /// use ckpt::{shared, Checkpointer, StateDict, StateDictModel};
    /// let model = shared(StateDictModel::new(StateDict::new()));
    /// let strict = Checkpointer::new(model, "output").resume_fallback(false);
    /// # let _ = strict;
    /// ```
    pub fn resume_fallback(mut self, fallback: bool) -> Checkpointer {
        self.resume_fallback = fallback;
        self
    }

    /// Saves and loads the model's state dict under `key` instead of `"model"`, for files
    /// that keep it elsewhere (PyTorch Lightning's `state_dict`). Checkpointables cannot use
    /// that key.
    ///
    /// A file that is a plain state dict (the tensors at the top level, no model entry)
    /// loads with [`crate::DetectionCheckpointer`], which takes the whole dict as the model
    /// when it has no `model` entry.
    ///
    /// ```
    /// use ckpt::{shared, Checkpointer, StateDict, StateDictModel};
    /// let model = shared(StateDictModel::new(StateDict::new()));
    /// let lightning = Checkpointer::new(model, "output").with_model_key("state_dict");
    /// assert_eq!(lightning.model_key(), "state_dict");
    /// ```
    pub fn with_model_key(mut self, key: impl Into<String>) -> Checkpointer {
        self.model_key = key.into();
        self
    }

    /// The checkpoint entry holding the model's state dict (`"model"` by default).
    pub fn model_key(&self) -> &str {
        &self.model_key
    }

    /// Resolves the URLs given to [`Checkpointer::load`] (`http(s)://`, `file://`, ...) with
    /// `resolver` instead of the standard one (its download cache, progress callback,
    /// handlers for more prefixes).
    pub fn with_resolver(mut self, resolver: Resolver) -> Checkpointer {
        self.resolver = resolver;
        self
    }

    /// Replaces the loading hooks (used by specialised checkpointers).
    pub fn with_hooks(mut self, hooks: Arc<dyn CheckpointHooks>) -> Checkpointer {
        self.hooks = hooks;
        self
    }

    /// Tracks `checkpointable`, saved and loaded under `key`. A key used twice is an error.
    pub fn add_checkpointable<C: Checkpointable + 'static>(
        &mut self,
        key: &str,
        checkpointable: Shared<C>,
    ) -> Result<()> {
        self.add_shared_checkpointable(key, checkpointable)
    }

    /// [`Checkpointer::add_checkpointable`] for an already type-erased handle.
    pub fn add_shared_checkpointable(
        &mut self,
        key: &str,
        checkpointable: Shared<dyn Checkpointable>,
    ) -> Result<()> {
        if key == self.model_key || self.checkpointables.contains_key(key) {
            return Err(Error::DuplicateCheckpointable {
                name: key.to_string(),
            });
        }
        self.checkpointables.insert(key.to_string(), checkpointable);
        Ok(())
    }

    /// The model handle.
    pub fn model(&self) -> &Shared<dyn Model> {
        &self.model
    }

    /// Where checkpoints are saved, if anywhere.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    /// The keys of the tracked checkpointables, in the order they were added.
    pub fn checkpointable_keys(&self) -> impl Iterator<Item = &str> {
        self.checkpointables.keys().map(String::as_str)
    }

    /// Whether [`Checkpointer::save`] writes anything.
    pub fn saves_to_disk(&self) -> bool {
        self.save_to_disk && self.store.is_some()
    }

    /// Saves `{"model": .., <checkpointable key>: .., <extra>..}` to `<name>.pth` in the
    /// save directory and then names it in `last_checkpoint`; does nothing without a save
    /// directory or with `save_to_disk == false`.
    ///
    /// Both files are replaced atomically and the tag is written last: a crash or an error
    /// at any point leaves the previous checkpoint and tag intact. Temporary files left by
    /// an earlier crashed save are removed first. `name` must be a plain file name.
    pub fn save(&self, name: &str, extra: Dict) -> Result<()> {
        let Some(store) = self.store.as_ref().filter(|_| self.save_to_disk) else {
            return Ok(());
        };
        let basename = format!("{name}.pth");
        check_basename(name)?;
        check_tag_name(&basename)?;
        let data = self.checkpoint_dict(extra)?;

        self.hold_writer_lock(store)?;
        if let Err(e) = store.remove_stale_temporaries() {
            tracing::warn!("Could not remove stale temporary files: {}", e.report());
        }
        let location = store.location(&basename);
        tracing::info!("Saving checkpoint to {}", location.display());
        store.write(&basename, &mut |w| {
            format::write_torch(w, &data, &self.save_options)
        })?;
        self.tag_last_checkpoint(&basename)
            .map_err(|e| Error::NotTagged {
                checkpoint: location,
                source: Box::new(e),
            })
    }

    /// Takes the save directory's writer lock on the first save, and keeps it for the life
    /// of the checkpointer.
    ///
    /// For its life rather than for each save: saves are short and far apart, so two jobs
    /// saving into one directory would rarely meet inside a save, and would go on
    /// interleaving their checkpoints unnoticed; held from the first save on, the lock fails
    /// the second job at its first save. The kernel drops it when the process dies, so a
    /// crash never leaves the directory locked.
    fn hold_writer_lock(&self, store: &Arc<dyn Store>) -> Result<()> {
        let mut held = self
            .writer_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if held.is_none() {
            *held = Some(store.lock_writer()?);
        }
        Ok(())
    }

    /// The dict [`Checkpointer::save`] writes.
    pub fn checkpoint_dict(&self, extra: Dict) -> Result<Value> {
        let mut data = Dict::new();
        let model_state = lock(&self.model).state_dict()?;
        data.insert(self.model_key.as_str(), model_state.to_value());
        for (key, obj) in &self.checkpointables {
            // The model's key, changed by with_model_key after the checkpointable was added.
            if *key == self.model_key {
                return Err(Error::DuplicateCheckpointable { name: key.clone() });
            }
            let state = lock(obj).state_dict().in_entry(key)?;
            data.insert(key.as_str(), state);
        }
        for (key, value) in extra.items {
            data.items.insert(key, value);
        }
        Ok(Value::Dict(data))
    }

    /// Writes `basename` into `last_checkpoint`, atomically.
    pub fn tag_last_checkpoint(&self, basename: &str) -> Result<()> {
        check_tag_name(basename)?;
        let store = self.require_store()?;
        store.write(LAST_CHECKPOINT, &mut |w| {
            w.write_all(basename.as_bytes())
                .map_err(|e| Error::io(store.location(LAST_CHECKPOINT), e))
        })
    }

    /// Whether the save directory has a `last_checkpoint` tag.
    pub fn has_checkpoint(&self) -> Result<bool> {
        match &self.store {
            Some(store) => store.exists(LAST_CHECKPOINT),
            None => Ok(false),
        }
    }

    /// The basename `last_checkpoint` names, `None` without a tag. A tag that is empty,
    /// unreadable, or names anything but a plain file name in the save directory (`../x`,
    /// an absolute path) is an error.
    pub fn last_checkpoint_name(&self) -> Result<Option<String>> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let Some(bytes) = store.read_small(LAST_CHECKPOINT)? else {
            return Ok(None);
        };
        let bad_tag = |problem| Error::BadTag {
            tag: store.location(LAST_CHECKPOINT),
            problem,
        };
        let text = String::from_utf8(bytes).map_err(|_| bad_tag(TagProblem::NotUtf8))?;
        let name = text.trim();
        if name.is_empty() {
            return Err(bad_tag(TagProblem::Empty));
        }
        check_basename(name).map_err(|_| {
            bad_tag(TagProblem::OutsideDirectory {
                name: name.to_string(),
            })
        })?;
        Ok(Some(name.to_string()))
    }

    /// The path of the last checkpoint (save directory + the content of `last_checkpoint`),
    /// `None` without a tag; see [`Checkpointer::last_checkpoint_name`] for the errors.
    pub fn get_checkpoint_file(&self) -> Result<Option<PathBuf>> {
        let name = self.last_checkpoint_name()?;
        Ok(match (name, &self.store) {
            (Some(name), Some(store)) => Some(store.location(&name)),
            _ => None,
        })
    }

    /// Every regular `.pth` file in the save directory, sorted; temporary files of
    /// unfinished saves are never listed.
    pub fn get_all_checkpoint_files(&self) -> Result<Vec<PathBuf>> {
        let Some(store) = &self.store else {
            return Ok(Vec::new());
        };
        Ok(store
            .list()?
            .into_iter()
            .filter(|name| name.ends_with(".pth"))
            .map(|name| store.location(&name))
            .collect())
    }

    /// With `resume` and a `last_checkpoint` tag, loads the last checkpoint with every
    /// checkpointable; otherwise loads `path` (the model only), or nothing without a path
    /// (Python's `""`): it logs `No checkpoint found. Initializing model from scratch` and
    /// returns an empty dict.
    ///
    /// A tag whose target is missing, unreadable or outside the save directory is an error:
    /// resuming never silently starts from scratch.
    ///
    /// ```no_run
    /// use std::path::Path;
    /// use ckpt::{shared, Checkpointer, StateDict, StateDictModel};
    /// let model = shared(StateDictModel::new(StateDict::new()));
    /// let checkpointer = Checkpointer::new(model, "output");
    /// // Resume from output/last_checkpoint, else start from pretrained weights:
    /// checkpointer.resume_or_load(Some(Path::new("pretrained.pth")), true)?;
    /// // Resume, else start from scratch:
    /// checkpointer.resume_or_load(None, true)?;
    /// # Ok::<(), ckpt::Error>(())
    /// ```
    pub fn resume_or_load(&self, path: Option<&Path>, resume: bool) -> Result<Dict> {
        Ok(self.resume_or_load_with_report(path, resume)?.extra)
    }

    /// [`Checkpointer::resume_or_load`], returning what was loaded and what did not match as
    /// a [`LoadReport`] (its `extra` is what `resume_or_load` returns).
    pub fn resume_or_load_with_report(
        &self,
        path: Option<&Path>,
        resume: bool,
    ) -> Result<LoadReport> {
        if resume {
            // A `last_checkpoint` that is not a file is an error here, not "no checkpoint".
            if let Some(name) = self.last_checkpoint_name()? {
                return crate::resume::resume(self, &name);
            }
        }
        match path {
            Some(path) => self.load_with_report(path, Checkpointables::None),
            None => Ok(nothing_loaded()),
        }
    }

    /// Loads the checkpoint at `path`: the model (entries whose shape differs from the
    /// model's are skipped, the rest loaded non-strictly, and the skipped, missing and
    /// unexpected names logged as warnings worded as fvcore's), then each requested
    /// checkpointable present in the file. Returns what is left of the file's dict
    /// (`iteration`, user extras). An empty path is an error: to start from scratch, call
    /// [`Checkpointer::resume_or_load`] without a path, or do not load.
    ///
    /// What did not match is logged through `tracing`; [`Checkpointer::load_with_report`]
    /// returns it as a value. A load that matches none of the model's names is also printed
    /// on stderr when no subscriber or logger would show the log.
    ///
    /// On error nothing is changed: the file is read and the model state validated before
    /// anything is loaded; the checkpointables are loaded before the model, and one that
    /// rejects its state (or a model that fails to load) rolls back the checkpointables
    /// loaded before it. (The Python checkpointer loads the model first; loading it last
    /// lets it take the values in place, with no copy of its old state kept for a rollback.)
    ///
    /// Afterwards nothing depends on the file, which may be truncated or rewritten: the
    /// model copied what it keeps (the [`Model::load_state_dict`] contract), the
    /// checkpointables and the returned dict got copies of their own ([`Value::detach`]),
    /// or, for a checkpointable that keeps only copies of its own
    /// ([`Checkpointable::keeps_loaded_tensors`]), made them.
    /// Entries whose shape differs from the model's, or whose dtype cannot be loaded into
    /// the model's (complex into real), are skipped and reported.
    ///
    /// ```no_run
    /// use ckpt::{shared, Checkpointables, Checkpointer, Serde, StateDict, StateDictModel};
    /// let model = shared(StateDictModel::new(StateDict::new()));
    /// let mut checkpointer = Checkpointer::new(model, "output");
    /// checkpointer.add_checkpointable("step", shared(Serde(0u64)))?;
    /// let extra = checkpointer.load("output/model_0004999.pth", Checkpointables::All)?;
    /// checkpointer.load("pretrained.pth", Checkpointables::None)?; // the model only
    /// checkpointer.load("output/model_0004999.pth", Checkpointables::only(["step"]))?;
    /// # Ok::<(), ckpt::Error>(())
    /// ```
    pub fn load(&self, path: impl AsRef<Path>, checkpointables: Checkpointables) -> Result<Dict> {
        Ok(self.load_with_report(path, checkpointables)?.extra)
    }

    /// [`Checkpointer::load`], returning what was loaded and what did not match as a
    /// [`LoadReport`] (its `extra` is what `load` returns).
    pub fn load_with_report(
        &self,
        path: impl AsRef<Path>,
        checkpointables: Checkpointables,
    ) -> Result<LoadReport> {
        self.load_file(path.as_ref(), checkpointables, &LoadOptions::default())
    }

    /// Whether a resume checks checksums ([`Checkpointer::verify_on_resume`]).
    pub(crate) fn verifies_on_resume(&self) -> bool {
        self.verify_on_resume
    }

    /// Whether a resume falls back ([`Checkpointer::resume_fallback`]).
    pub(crate) fn falls_back_on_resume(&self) -> bool {
        self.resume_fallback
    }

    /// [`Checkpointer::load_with_report`] reading the file with `options`.
    pub(crate) fn load_file(
        &self,
        path: &Path,
        checkpointables: Checkpointables,
        options: &LoadOptions,
    ) -> Result<LoadReport> {
        if path.as_os_str().is_empty() {
            return Err(empty_path());
        }
        tracing::info!("[Checkpointer] Loading from {} ...", path.display());
        // A URL is fetched into the download cache first, as Python's checkpointer does.
        let fetched = match path.to_str() {
            Some(text) if text.contains("://") => Some(self.resolver.get_local_path(text)?),
            _ => None,
        };
        let path = fetched.as_deref().unwrap_or(path);
        let checkpoint = self.hooks.read_file_with(path, options).in_file(path)?;
        self.load_checkpoint(path, checkpoint, checkpointables)
            .in_file(path)
    }

    /// [`Checkpointer::load_with_report`] of a checkpoint dict already read from `path` (a
    /// file received from another process, a dict built in memory); `path` only names it in
    /// logs, errors and the report.
    pub fn load_checkpoint(
        &self,
        path: &Path,
        mut checkpoint: Dict,
        checkpointables: Checkpointables,
    ) -> Result<LoadReport> {
        let keys: Vec<&str> = match &checkpointables {
            Checkpointables::All => self.checkpointables.keys().map(String::as_str).collect(),
            Checkpointables::None => Vec::new(),
            Checkpointables::Only(keys) => keys.iter().map(String::as_str).collect(),
        };
        for key in &keys {
            if !self.checkpointables.contains_key(*key) {
                return Err(Error::UnknownCheckpointable {
                    name: key.to_string(),
                });
            }
        }

        // Checksums still to check (a file read with `verify_crc32_on_copy`): the copies
        // below check what they copy; the rest is checked before the model is touched.
        let pending = format::pending_storages(
            checkpoint
                .items
                .values()
                .chain(checkpoint.attributes.values()),
        );

        // Everything about the model that can be checked is checked before anything is
        // loaded. The lock is not held while the checkpointables load (one may lock the model).
        let (state, incorrect_shapes, incorrect_dtypes, model_keys, copied) = {
            let model = lock(&self.model);
            let state = self
                .hooks
                .model_state(&mut checkpoint, &self.model_key, &*model)?;
            let (state, shapes, dtypes, model_keys) = drop_incompatible(state, &*model)?;
            // The storages the model copies (those of its own names), checked as it does.
            let copied: HashSet<usize> = match pending.is_empty() {
                true => HashSet::new(),
                false => {
                    let names: HashSet<String> = model
                        .tensor_info()?
                        .into_iter()
                        .map(|info| info.name)
                        .collect();
                    state
                        .iter()
                        .filter(|(name, _)| names.contains(*name))
                        .map(|(_, t)| t.storage().id())
                        .collect()
                }
            };
            (state, shapes, dtypes, model_keys, copied)
        };
        let mut states: Vec<(&str, Value, bool)> = keys
            .iter()
            .filter_map(|key| {
                let state = checkpoint.remove(key)?;
                let keeps = self
                    .checkpointables
                    .get(*key)
                    .is_none_or(|handle| lock(handle).keeps_loaded_tensors());
                Some((*key, state, keeps))
            })
            .collect();
        // What the caller and the checkpointables keep must not depend on the file (nor keep
        // its whole buffer alive): copy it out once, here. A checkpointable that keeps only
        // copies of what it loads (`keeps_loaded_tensors` false) reads the file's values
        // itself, and the model copies what it keeps straight into its own memory and dtypes,
        // so every value is copied once.
        detach_values(
            states
                .iter_mut()
                .filter(|(_, _, keeps)| *keeps)
                .map(|(_, state, _)| state)
                .chain(checkpoint.items.values_mut())
                .chain(checkpoint.attributes.values_mut()),
        )?;

        verify_not_copied(&pending, &copied)?;

        // The checkpointables first, the model last: a failure rolls back the checkpointables
        // loaded before it, and the model, untouched until then, needs no snapshot (one would
        // share its memory and keep it from taking the values in place).
        let mut restored: Vec<(&str, Value)> = Vec::new();
        for (key, state, _) in states {
            tracing::info!("Loading {key} from {} ...", path.display());
            if let Err(e) = self.load_one(key, state, &mut restored) {
                self.roll_back(restored);
                return Err(e);
            }
        }
        let mut model = lock(&self.model);
        let offered: Vec<String> = state.keys().map(str::to_string).collect();
        let loaded = match model.load_state_dict(state) {
            Ok(loaded) => loaded,
            Err(e) => {
                drop(model);
                self.roll_back(restored);
                return Err(e);
            }
        };
        let unexpected: HashSet<&str> = loaded.unexpected_keys.iter().map(String::as_str).collect();
        let loaded_names: Vec<String> = offered
            .iter()
            .filter(|name| !unexpected.contains(name.as_str()))
            .cloned()
            .collect();
        let mut incompatible = IncompatibleKeys {
            missing_keys: loaded.missing_keys,
            unexpected_keys: loaded.unexpected_keys,
            incorrect_shapes,
            incorrect_dtypes,
        };
        self.hooks.adjust_report(&mut incompatible, &*model);
        incompatible.log(&model.aliases());
        drop(model);
        // What the model did not copy through `read_into` (a model that reads the bytes
        // some other way, names it does not have): checked now, each storage once.
        for storage in &pending {
            storage.verify_checksum()?;
        }

        let report = LoadReport {
            path: Some(path.to_path_buf()),
            model_keys,
            loaded: loaded_names,
            incompatible,
            checkpointables: restored.iter().map(|(key, _)| key.to_string()).collect(),
            extra: checkpoint,
            skipped: Vec::new(),
        };
        if report.matched_nothing() {
            warn_unmissable(&format!(
                "{}: none of the model's {model_keys} parameters and buffers was found in the checkpoint; the model is unchanged",
                path.display()
            ));
        }
        Ok(report)
    }

    /// Loads one checkpointable, remembering its previous state in `restored`.
    fn load_one<'k>(
        &self,
        key: &'k str,
        state: Value,
        restored: &mut Vec<(&'k str, Value)>,
    ) -> Result<()> {
        let handle = self
            .checkpointables
            .get(key)
            .ok_or_else(|| Error::UnknownCheckpointable {
                name: key.to_string(),
            })?;
        let mut obj = lock(handle);
        let before = obj.state_dict().in_entry(key)?;
        obj.load_state_dict(state).in_entry(key)?;
        restored.push((key, before));
        Ok(())
    }

    /// Gives the checkpointables in `restored` their states from before the load, last first.
    fn roll_back(&self, restored: Vec<(&str, Value)>) {
        for (key, before) in restored.into_iter().rev() {
            if let Some(handle) = self.checkpointables.get(key) {
                if let Err(e) = lock(handle).load_state_dict(before) {
                    tracing::error!(
                        "Could not restore the state of '{key}' after a failed load: {}",
                        e.report()
                    );
                }
            }
        }
    }

    fn require_store(&self) -> Result<&Arc<dyn Store>> {
        self.store
            .as_ref()
            .ok_or_else(|| Error::invalid("this checkpointer has no save directory"))
    }
}

/// Checks the checksums of the storages in `pending` but those the model will copy
/// (`copied`, by id), which it checks as it copies them (the checkpointables and the extras
/// were copied, and so checked, already): a corrupt entry the model does not load is found
/// before the model is touched.
fn verify_not_copied(pending: &[crate::Storage], copied: &HashSet<usize>) -> Result<()> {
    for storage in pending {
        if !copied.contains(&storage.id()) {
            storage.verify_checksum()?;
        }
    }
    Ok(())
}

/// The report of a load without a path: nothing loaded, logged as Python logs it.
pub(crate) fn nothing_loaded() -> LoadReport {
    tracing::info!("No checkpoint found. Initializing model from scratch");
    LoadReport::default()
}

/// The error of a load given an empty path (Python's "no checkpoint").
pub(crate) fn empty_path() -> Error {
    Error::InvalidPath {
        path: String::new(),
        reason: "an empty path names no checkpoint; to start from scratch, call resume_or_load without a path".to_string(),
    }
}

/// A plain file name that `last_checkpoint` can name: readers (Python's too) strip the tag,
/// so a name starting or ending with whitespace could be saved but never resumed.
fn check_tag_name(basename: &str) -> Result<()> {
    check_basename(basename)?;
    if basename.trim() != basename {
        return Err(Error::InvalidName {
            name: basename.to_string(),
            reason: "starts or ends with whitespace, which last_checkpoint cannot keep",
        });
    }
    Ok(())
}

/// Drops the entries whose shape differs from the model's, and those whose dtype cannot be
/// loaded into the model's ([`can_cast`]), unless the model accepts any shape for that name
/// (a parameter not initialised yet takes the tensor as it is). Reports them as
/// `(key, in the checkpoint, in the model)`, with the number of names the model has.
fn drop_incompatible(
    mut state: StateDict,
    model: &dyn Model,
) -> Result<(StateDict, Vec<ShapeMismatch>, Vec<DTypeMismatch>, usize)> {
    let infos: HashMap<String, (Vec<usize>, DType)> = model
        .tensor_info()?
        .into_iter()
        .map(|info| (info.name, (info.shape, info.dtype)))
        .collect();
    let mut shapes = Vec::new();
    let mut dtypes = Vec::new();
    state.tensors.retain(|name, tensor| {
        let Some((shape, dtype)) = infos.get(name) else {
            return true;
        };
        if model.accepts_any_shape(name) {
            return true;
        }
        if tensor.shape() != shape.as_slice() {
            shapes.push(ShapeMismatch::new(
                name.clone(),
                tensor.shape().to_vec(),
                shape.clone(),
            ));
            return false;
        }
        if !can_cast(tensor.dtype(), *dtype) {
            dtypes.push(DTypeMismatch::new(name.clone(), tensor.dtype(), *dtype));
            return false;
        }
        true
    });
    let model_keys = infos.len();
    Ok((state, shapes, dtypes, model_keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpointers_can_move_to_a_saving_thread() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Checkpointer>();
        send_sync::<crate::PeriodicCheckpointer>();
    }

    #[test]
    fn metadata_module_names_lose_the_prefix_too() {
        let mut meta = Dict::ordered();
        meta.insert("module", Value::Int(1));
        meta.insert("module.fc", Value::Int(2));
        let mut state = StateDict::new();
        state.insert(
            "module.fc.weight",
            crate::Tensor::from_slice(&[1.0f32], &[1]).unwrap(),
        );
        state.metadata = Some(Value::Dict(meta));
        let stripped = strip_prefix_if_present(state, "module.");
        assert!(stripped.get("fc.weight").is_some());
        let meta = stripped.metadata.unwrap();
        let keys: Vec<String> = meta
            .as_dict()
            .unwrap()
            .iter()
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(keys, vec!["", "fc"]);
    }
}
