//! [`DetectionCheckpointer`]: detectron2's checkpointer. It loads
//! detectron2 and Detectron1/Caffe2 model-zoo pickles, pycls files, torch and safetensors
//! files, from local paths, URLs (downloaded once into a cache) and `detectron2://` /
//! `catalog://` names, renames checkpoint keys to the model's when the checkpoint asks for
//! it, and keeps every rank of a distributed job in step.
//!
//! Better than Python: when some ranks cannot read the checkpoint, rank 0 sends them the
//! whole file, so the model, every checkpointable and the returned extras (`iteration`)
//! are identical on every rank (detectron2 only re-syncs the model's parameters).
//!
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checkpointer::{
    empty_path, nothing_loaded, CheckpointHooks, Checkpointables, Checkpointer,
};
use crate::dist::{agree, all_gather_flag, Communicator, SingleProcess};
use crate::error::{Error, Result, ResultExt, TagProblem};
use crate::format::LoadOptions;
use crate::incompatible::{IncompatibleKeys, LoadReport};
use crate::model::{Checkpointable, Model, Shared};
use crate::resolve::{Resolved, Resolver};
use crate::value::{Dict, StateDict};

use super::file::{read_detection_file, read_detection_file_with};
use super::share;
use super::state::{filter_detection_report, plan_load, prepare_model_state, LoadPlan};

/// The loading hooks of a [`DetectionCheckpointer`]: renaming by the matching heuristics
/// when the checkpoint asks for it, and detectron2's quieter report.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DetectionHooks;

impl CheckpointHooks for DetectionHooks {
    fn read_file(&self, path: &Path) -> Result<Dict> {
        read_detection_file(path, false)
    }

    fn read_file_with(&self, path: &Path, options: &LoadOptions) -> Result<Dict> {
        read_detection_file_with(path, false, options)
    }

    /// The detection file readers put the model under `"model"` whatever the file's layout
    /// (or take the whole dict when it has no such entry), so `model_key` is not used.
    fn model_state(
        &self,
        checkpoint: &mut Dict,
        model_key: &str,
        model: &dyn Model,
    ) -> Result<StateDict> {
        let _ = model_key;
        let shapes = model.shapes()?;
        Ok(prepare_model_state(checkpoint, &shapes)?.state)
    }

    fn adjust_report(&self, report: &mut IncompatibleKeys, model: &dyn Model) {
        let top_level: HashSet<String> = match model.shapes() {
            Ok(shapes) => shapes
                .into_iter()
                .map(|(name, _)| name)
                .filter(|name| !name.contains('.'))
                .collect(),
            Err(e) => {
                tracing::debug!("cannot list the model's names: {}", e.report());
                HashSet::new()
            }
        };
        filter_detection_report(report, |name| top_level.contains(name));
    }
}

/// detectron2's `DetectionCheckpointer`: a [`Checkpointer`] that reads model-zoo files,
/// resolves URLs and named paths, and loads in step across the ranks of a job.
///
/// Every rank of a job must call [`DetectionCheckpointer::load`] and
/// [`DetectionCheckpointer::resume_or_load`] together (they use collectives of the
/// [`Communicator`]); saving happens on rank 0 only by default.
///
/// Better than Python: when some ranks cannot read the checkpoint, rank 0 sends them the
/// whole file, so the model, every checkpointable and the returned extras (`iteration`)
/// are identical on every rank (detectron2 only re-syncs the model's parameters).
///
/// ```no_run
/// use ckpt::{shared, Checkpointables, DetectionCheckpointer, StateDict, StateDictModel};
/// let model = shared(StateDictModel::new(StateDict::new()));
/// let checkpointer = DetectionCheckpointer::new(model, "output");
/// checkpointer.load("detectron2://ImageNetPretrained/MSRA/R-50.pkl", Checkpointables::All)?;
/// checkpointer.load("elsewhere.pth?matching_heuristics=True", Checkpointables::All)?;
/// // Resume from output/last_checkpoint, else start from the model zoo's weights:
/// checkpointer.resume_or_load(Some("detectron2://ImageNetPretrained/MSRA/R-50.pkl"), true)?;
/// # Ok::<(), ckpt::Error>(())
/// ```
pub struct DetectionCheckpointer {
    inner: Checkpointer,
    comm: Arc<dyn Communicator>,
    resolver: Resolver,
    /// Whether saving was switched on or off explicitly, which a communicator set later
    /// does not override.
    save_to_disk_set: bool,
}

impl std::fmt::Debug for DetectionCheckpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetectionCheckpointer")
            .field("checkpointer", &self.inner)
            .field("rank", &self.comm.rank())
            .field("world_size", &self.comm.world_size())
            .field("resolver", &self.resolver)
            .finish()
    }
}

impl DetectionCheckpointer {
    /// A checkpointer of a single-process job saving to `save_dir` (empty: never saves),
    /// resolving paths with [`Resolver::new`].
    pub fn new<M: Model + 'static>(model: Shared<M>, save_dir: impl AsRef<Path>) -> Self {
        let inner = Checkpointer::new(model, save_dir).with_hooks(Arc::new(DetectionHooks));
        DetectionCheckpointer {
            inner,
            comm: Arc::new(SingleProcess),
            resolver: Resolver::new(),
            save_to_disk_set: false,
        }
    }

    /// Uses `comm` for the collectives of loading, and saves only when it is the main
    /// process, unless [`DetectionCheckpointer::save_to_disk`] said otherwise (in either
    /// order, as Python's explicit `save_to_disk=` wins over the rank).
    pub fn with_communicator(self, comm: impl Communicator + 'static) -> Self {
        self.with_shared_communicator(Arc::new(comm))
    }

    /// [`DetectionCheckpointer::with_communicator`] for a shared communicator.
    pub fn with_shared_communicator(mut self, comm: Arc<dyn Communicator>) -> Self {
        if !self.save_to_disk_set {
            self.inner = self.inner.save_to_disk(comm.is_main_process());
        }
        self.comm = comm;
        self
    }

    /// Enables or disables saving, whatever the rank.
    pub fn save_to_disk(mut self, save_to_disk: bool) -> Self {
        self.save_to_disk_set = true;
        self.inner = self.inner.save_to_disk(save_to_disk);
        self
    }

    /// Whether a resume checks the checkpoint's crc32s (see
    /// [`Checkpointer::verify_on_resume`]; default true). In a job of several processes
    /// the ranks load rank 0's file as before, without this check.
    pub fn verify_on_resume(mut self, verify: bool) -> Self {
        self.inner = self.inner.verify_on_resume(verify);
        self
    }

    /// Whether a resume falls back to an older intact checkpoint when the tagged one cannot
    /// be read (see [`Checkpointer::resume_fallback`]; default true). In a job of several
    /// processes a resume does not fall back.
    pub fn resume_fallback(mut self, fallback: bool) -> Self {
        self.inner = self.inner.resume_fallback(fallback);
        self
    }

    /// Resolves paths with `resolver` (its cache directory, progress callback, handlers).
    pub fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// The resolver, to register handlers for more path prefixes.
    pub fn resolver_mut(&mut self) -> &mut Resolver {
        &mut self.resolver
    }

    /// The plain checkpointer underneath (saving, listing).
    pub fn checkpointer(&self) -> &Checkpointer {
        &self.inner
    }

    /// The plain checkpointer, keeping detectron2's file reading and report (not the path
    /// resolution nor the multi-rank loading), e.g. to hand to a
    /// [`crate::PeriodicCheckpointer`] after resuming.
    pub fn into_checkpointer(self) -> Checkpointer {
        self.inner
    }

    /// The communicator.
    pub fn communicator(&self) -> &dyn Communicator {
        &*self.comm
    }

    /// See [`Checkpointer::add_checkpointable`].
    pub fn add_checkpointable<C: Checkpointable + 'static>(
        &mut self,
        key: &str,
        checkpointable: Shared<C>,
    ) -> Result<()> {
        self.inner.add_checkpointable(key, checkpointable)
    }

    /// See [`Checkpointer::save`] (nothing is written unless saving is enabled).
    pub fn save(&self, name: &str, extra: Dict) -> Result<()> {
        self.inner.save(name, extra)
    }

    /// See [`Checkpointer::has_checkpoint`].
    pub fn has_checkpoint(&self) -> Result<bool> {
        self.inner.has_checkpoint()
    }

    /// See [`Checkpointer::get_checkpoint_file`].
    pub fn get_checkpoint_file(&self) -> Result<Option<PathBuf>> {
        self.inner.get_checkpoint_file()
    }

    /// See [`Checkpointer::get_all_checkpoint_files`].
    pub fn get_all_checkpoint_files(&self) -> Result<Vec<PathBuf>> {
        self.inner.get_all_checkpoint_files()
    }

    /// See [`Checkpointer::tag_last_checkpoint`].
    pub fn tag_last_checkpoint(&self, basename: &str) -> Result<()> {
        self.inner.tag_last_checkpoint(basename)
    }

    /// Loads the checkpoint at `path` (a local path, `file://`, `http(s)://`,
    /// `detectron2://`, `catalog://` or any registered prefix, with an optional
    /// `?matching_heuristics=True`): the model, then each requested checkpointable present.
    /// Returns the rest of the checkpoint dict (`iteration`, user extras). An empty path is
    /// an error, as for [`Checkpointer::load`].
    ///
    /// With several ranks: rank 0 lacking the file is an error on every rank (`File <path>
    /// not found on main worker.`; rank 0 returns its own error when it could not resolve
    /// the path); when other ranks lack it, rank 0 sends them the file and
    /// every rank loads the same bytes. A rank that fails to load makes every rank return the
    /// same error, naming that rank and why (`rank 2 could not load the checkpoint: ...`), so
    /// that no rank trains on while another stopped; the ranks that did load keep what they
    /// loaded.
    pub fn load(&self, path: &str, checkpointables: Checkpointables) -> Result<Dict> {
        Ok(self.load_with_report(path, checkpointables)?.extra)
    }

    /// [`DetectionCheckpointer::load`], returning what was loaded and what did not match as
    /// a [`LoadReport`] (its `extra` is what `load` returns).
    pub fn load_with_report(
        &self,
        path: &str,
        checkpointables: Checkpointables,
    ) -> Result<LoadReport> {
        if path.is_empty() {
            return Err(empty_path());
        }
        tracing::info!("[DetectionCheckpointer] Loading from {path} ...");
        let resolved = self.resolver.resolve(path);
        self.load_resolved(path, resolved, checkpointables)
    }

    /// With `resume` and a last checkpoint (rank 0's, with several ranks), loads it with every
    /// checkpointable; otherwise loads `path` (the model only), or nothing without a path.
    pub fn resume_or_load(&self, path: Option<&str>, resume: bool) -> Result<Dict> {
        Ok(self.resume_or_load_with_report(path, resume)?.extra)
    }

    /// [`DetectionCheckpointer::resume_or_load`], returning what was loaded and what did not
    /// match as a [`LoadReport`].
    pub fn resume_or_load_with_report(
        &self,
        path: Option<&str>,
        resume: bool,
    ) -> Result<LoadReport> {
        let last = if !resume {
            None
        } else if self.comm.world_size() <= 1 && self.inner.store().is_some() {
            // One process: checked on the way in, and an unreadable checkpoint falls back
            // to an older one (see `Checkpointer::resume_fallback`).
            if let Some(name) = self.inner.last_checkpoint_name()? {
                return crate::resume::resume(&self.inner, &name);
            }
            None
        } else if self.comm.world_size() > 1 {
            share::broadcast_last_checkpoint(&*self.comm, || self.local_last_checkpoint())?
        } else {
            self.local_last_checkpoint()?
        };
        let Some(name) = last else {
            return match path {
                Some(path) => self.load_with_report(path, Checkpointables::None),
                None => Ok(nothing_loaded()),
            };
        };

        let file = match self.inner.store() {
            Some(store) => store.location(&name),
            None => PathBuf::from(&name),
        };
        let shown = file.display().to_string();
        tracing::info!("[DetectionCheckpointer] Loading from {shown} ...");
        let resolved = Ok(Resolved::local(file));
        self.load_resolved(&shown, resolved, Checkpointables::All)
    }

    /// The basename of the last checkpoint, checked to exist (a tag naming a missing file is
    /// an error: resuming never silently starts from scratch).
    fn local_last_checkpoint(&self) -> Result<Option<String>> {
        // Not `has_checkpoint`: a `last_checkpoint` that is not a file is an error, never
        // "no checkpoint".
        let Some(name) = self.inner.last_checkpoint_name()? else {
            return Ok(None);
        };
        if let Some(store) = self.inner.store() {
            if !store.exists(&name)? {
                return Err(Error::BadTag {
                    tag: store.location(crate::checkpointer::LAST_CHECKPOINT),
                    problem: TagProblem::MissingFile { name },
                });
            }
        }
        Ok(Some(name))
    }

    fn load_resolved(
        &self,
        shown: &str,
        resolved: Result<Resolved>,
        checkpointables: Checkpointables,
    ) -> Result<LoadReport> {
        let comm = &*self.comm;
        if comm.world_size() <= 1 {
            let resolved = resolved?;
            return self.load_local(&resolved, checkpointables);
        }
        let readable = resolved.as_ref().is_ok_and(|r| r.path.is_file());
        let flags = all_gather_flag(comm, readable)?;
        if !flags.first().copied().unwrap_or(false) {
            // Rank 0 knows why: its own error says it (a failed download, ...).
            return Err(match resolved {
                Err(e) if comm.is_main_process() => e,
                _ => Error::invalid(format!("File {shown} not found on main worker.")),
            });
        }
        let what = "load the checkpoint";
        if flags.iter().all(|&f| f) {
            let loaded = resolved.and_then(|resolved| self.load_local(&resolved, checkpointables));
            return agree(comm, what, loaded);
        }
        tracing::warn!(
            "Not all workers can read checkpoint {shown}. Training may fail to fully resume."
        );
        let loaded = share::broadcast_checkpoint(comm, &resolved).and_then(|checkpoint| {
            let path = share::shown_path(&resolved, shown);
            tracing::info!("[Checkpointer] Loading from {} ...", path.display());
            self.inner
                .load_checkpoint(path, checkpoint, checkpointables)
                .in_file(path)
        });
        agree(comm, what, loaded)
    }

    fn load_local(
        &self,
        resolved: &Resolved,
        checkpointables: Checkpointables,
    ) -> Result<LoadReport> {
        let path = &resolved.path;
        tracing::info!("[Checkpointer] Loading from {} ...", path.display());
        let checkpoint = read_detection_file(path, resolved.options.matching_heuristics)?;
        self.inner
            .load_checkpoint(path, checkpoint, checkpointables)
            .in_file(path)
    }

    /// What [`DetectionCheckpointer::load`] of `path` would do to the model, without
    /// changing anything (this process only: no collectives).
    pub fn plan(&self, path: &str) -> Result<LoadPlan> {
        let resolved = self.resolver.resolve(path)?;
        let checkpoint = read_detection_file(&resolved.path, resolved.options.matching_heuristics)?;
        let shapes = crate::model::lock(self.inner.model()).shapes()?;
        plan_load(&shapes, checkpoint)
    }
}
