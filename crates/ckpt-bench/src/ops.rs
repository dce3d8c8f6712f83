//! The Rust contenders: one timed operation per child process (`ckpt-bench child ...`).
//!
//! State to save is built before the timer starts; files to load are read from the
//! benchmark directory (the driver has warmed them into the page cache).

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use ckpt::format::{
    load_with, save_safetensors, save_torch, write_torch, LoadOptions, SaveOptions,
};
use ckpt::matching::align_and_update_state_dicts;
use ckpt::{
    shared, Checkpointable, Checkpointer, DType, Dict, StateDict, StateDictModel, Tensor, Value,
};

use crate::measure::{measure, Sample};
use crate::spec::{matching_keys, Spec, TensorSpec};
use crate::state::{
    detectron_model, random_state, sgd_state, touch_state, touch_value, written_zeros,
};

/// Where the benchmark keeps its files.
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    /// The input file of `workload` with extension `ext` (`pth` or `safetensors`).
    pub fn input(&self, workload: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{workload}.{ext}"))
    }

    /// The file a save by `contender` writes (removed before each run).
    pub fn output(&self, contender: &str, workload: &str, ext: &str) -> PathBuf {
        self.dir
            .join("out")
            .join(format!("{contender}-{workload}.{ext}"))
    }

    /// The directory holding the detection checkpoint every contender resumes from.
    pub fn resume_dir(&self) -> PathBuf {
        self.dir.join("detectron")
    }

    /// The directory holding the big workload as a checkpoint (`{"model": state}`) with its
    /// `last_checkpoint` tag.
    pub fn big_resume_dir(&self) -> PathBuf {
        self.dir.join("big-resume")
    }

    pub fn spec(&self) -> PathBuf {
        self.dir.join("spec.json")
    }
}

type BoxError = Box<dyn std::error::Error>;

/// Runs Rust operation `op` on `workload` and returns its measurement.
pub fn run(
    op: &str,
    workload: &str,
    paths: &Paths,
    spec: &Spec,
    arg: u64,
) -> Result<Sample, BoxError> {
    let tensors = || -> Result<&[TensorSpec], BoxError> {
        match workload {
            "big" => Ok(&spec.big),
            "small" => Ok(&spec.small),
            other => Err(format!("workload {other} has no plain tensor list").into()),
        }
    };
    match op {
        "ckpt-save" => save_page_cache(tensors()?, &paths.output("ckpt", workload, "pth")),
        "ckpt-save-durable" => {
            let value = random_state(tensors()?)?.to_value();
            let out = paths.output("ckpt-durable", workload, "pth");
            remove(&out)?;
            let (sample, result) = measure(|| save_torch(&out, &value, &SaveOptions::default()));
            result?;
            Ok(sample)
        }
        "ckpt-load" => load(&paths.input(workload, "pth"), false),
        "ckpt-load-lazy" => load(&paths.input(workload, "pth"), true),
        "st-rs-save" => {
            safetensors_save(tensors()?, &paths.output("st-rs", workload, "safetensors"))
        }
        "st-rs-load" => safetensors_load(&paths.input(workload, "safetensors"), false),
        "st-rs-load-lazy" => safetensors_load(&paths.input(workload, "safetensors"), true),
        "ckpt-checkpointer-save" => {
            checkpointer_save(spec, &paths.dir.join("out").join("ckpt-detectron"))
        }
        "ckpt-checkpoint-write" => checkpoint_write(spec, &paths.output("ckpt", workload, "pth")),
        "ckpt-checkpointer-resume" => checkpointer_resume(spec, &paths.resume_dir()),
        "ckpt-big-resume" => big_resume(&spec.big, &paths.big_resume_dir(), false, true),
        "ckpt-big-resume-unverified" => {
            big_resume(&spec.big, &paths.big_resume_dir(), false, false)
        }
        "ckpt-big-resume-lazy-zeros" => big_resume(&spec.big, &paths.big_resume_dir(), true, true),
        "ckpt-match" => matching(arg as usize),
        "memcpy" => memcpy(arg as usize),
        "gen" => generate(workload, paths, spec),
        "ckpt-open-repeat" => open_repeat(&paths.input(workload, "pth"), arg.max(1)),
        "ckpt-convert" => crate::convert::ckpt_convert(paths, workload, arg),
        "copy-limit" => crate::convert::copy_limit(paths, workload, arg),
        other => Err(format!("unknown Rust operation {other}").into()),
    }
}

/// Makes way for an output at `path`: its directory exists, and no file is there.
pub(crate) fn remove(path: &Path) -> Result<(), BoxError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Writes the input files of `workload` with ckpt (used when Python is not available).
fn generate(workload: &str, paths: &Paths, spec: &Spec) -> Result<Sample, BoxError> {
    if workload == "detectron" {
        let dir = paths.resume_dir();
        let d = &spec.detectron;
        let model = shared(StateDictModel::new(detectron_model(d, false)?));
        let mut checkpointer = Checkpointer::new(model, &dir);
        checkpointer.add_checkpointable("optimizer", shared(OptimizerState(sgd_state(d)?)))?;
        let mut extra = Dict::new();
        extra.insert("iteration", Value::Int(d.iteration));
        checkpointer.save(&d.name, extra)?;
    } else {
        let tensors = match workload {
            "big" => &spec.big,
            _ => &spec.small,
        };
        let state = random_state(tensors)?;
        save_torch(
            paths.input(workload, "pth"),
            &state.to_value(),
            &SaveOptions::default(),
        )?;
        save_safetensors(paths.input(workload, "safetensors"), &state, None)?;
        if workload == "big" {
            let model = shared(StateDictModel::new(state));
            Checkpointer::new(model, paths.big_resume_dir()).save(BIG_CHECKPOINT, Dict::new())?;
        }
    }
    Ok(Sample::default())
}

/// The name the big workload's checkpoint is saved under (`<name>.pth`; Python uses it too).
const BIG_CHECKPOINT: &str = "model_big";

/// Opens the file lazily `times` times without touching tensor data (for profiling the
/// open alone); the sample is the mean.
fn open_repeat(path: &Path, times: u64) -> Result<Sample, BoxError> {
    let options = LoadOptions::default();
    let (mut sample, result) = measure(|| -> Result<(), BoxError> {
        for _ in 0..times {
            load_with(path, &options)?;
        }
        Ok(())
    });
    result?;
    sample.seconds /= times as f64;
    Ok(sample)
}

/// `write_torch` into a buffered file, no fsync: the page-cache save.
fn save_page_cache(tensors: &[TensorSpec], out: &Path) -> Result<Sample, BoxError> {
    let value = random_state(tensors)?.to_value();
    remove(out)?;
    let options = SaveOptions::default().with_archive_name("archive");
    let (sample, result) = measure(|| -> Result<(), BoxError> {
        let mut writer = BufWriter::with_capacity(1 << 20, File::create(out)?);
        write_torch(&mut writer, &value, &options)?;
        writer.into_inner().map_err(|e| e.into_error())?;
        Ok(())
    });
    result?;
    Ok(sample)
}

/// Eager (`mmap: false`, one heap buffer) or lazy (`mmap: true`) load, then every byte.
fn load(path: &Path, mmap: bool) -> Result<Sample, BoxError> {
    let options = LoadOptions::default().with_mmap(mmap);
    let (mut sample, result) = measure(|| -> Result<(f64, u64), BoxError> {
        let start = std::time::Instant::now();
        let loaded = load_with(path, &options)?;
        let open = start.elapsed().as_secs_f64();
        Ok((open, touch_value(&loaded.value)))
    });
    let (open, sum) = result?;
    sample.open_seconds = Some(open);
    sample.checksum = Some(sum as f64);
    Ok(sample)
}

fn safetensors_save(tensors: &[TensorSpec], out: &Path) -> Result<Sample, BoxError> {
    let state = random_state(tensors)?;
    remove(out)?;
    let (sample, result) = measure(|| -> Result<(), BoxError> {
        let mut views = Vec::with_capacity(state.len());
        for (name, t) in state.iter() {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                t.shape().to_vec(),
                t.storage().as_bytes(),
            )?;
            views.push((name, view));
        }
        safetensors::serialize_to_file(views, None, out)?;
        Ok(())
    });
    result?;
    Ok(sample)
}

/// The `safetensors` crate: read the file (or map it), parse the header, touch each tensor.
fn safetensors_load(path: &Path, mmap: bool) -> Result<Sample, BoxError> {
    let (mut sample, result) = measure(|| -> Result<(f64, u64), BoxError> {
        let start = std::time::Instant::now();
        let file = File::open(path)?;
        let bytes: Box<dyn AsRef<[u8]>> = if mmap {
            // SAFETY: the benchmark's input files are not modified while it runs.
            Box::new(unsafe { memmap2::Mmap::map(&file)? })
        } else {
            Box::new(fs::read(path)?)
        };
        let tensors = safetensors::SafeTensors::deserialize((*bytes).as_ref())?;
        let open = start.elapsed().as_secs_f64();
        let sum = tensors.iter().fold(0u64, |acc, (_, view)| {
            acc.wrapping_add(crate::state::touch_bytes(view.data()))
        });
        Ok((open, sum))
    });
    let (open, sum) = result?;
    sample.open_seconds = Some(open);
    sample.checksum = Some(sum as f64);
    Ok(sample)
}

/// An optimizer whose state is whatever the checkpoint holds (torch's SGD layout).
struct OptimizerState(Value);

impl Checkpointable for OptimizerState {
    fn state_dict(&self) -> ckpt::Result<Value> {
        Ok(self.0.clone())
    }
    fn load_state_dict(&mut self, state: Value) -> ckpt::Result<()> {
        self.0 = state;
        Ok(())
    }
}

/// `Checkpointer::save` of model + SGD momentum + iteration (atomic, fsynced).
fn checkpointer_save(spec: &Spec, dir: &Path) -> Result<Sample, BoxError> {
    let d = &spec.detectron;
    let model = shared(StateDictModel::new(detectron_model(d, false)?));
    let optimizer = shared(OptimizerState(sgd_state(d)?));
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    let mut checkpointer = Checkpointer::new(model, dir);
    checkpointer.add_checkpointable("optimizer", optimizer)?;
    let (sample, result) = measure(|| {
        let mut extra = Dict::new();
        extra.insert("iteration", Value::Int(d.iteration));
        checkpointer.save(&d.name, extra)
    });
    result?;
    Ok(sample)
}

/// The dict `Checkpointer::save` writes, written with `write_torch` into a buffered file
/// without fsync (what fvcore's `Checkpointer.save` does with `torch.save`).
fn checkpoint_write(spec: &Spec, out: &Path) -> Result<Sample, BoxError> {
    let d = &spec.detectron;
    let model = shared(StateDictModel::new(detectron_model(d, false)?));
    let mut checkpointer = Checkpointer::new(model, "");
    checkpointer.add_checkpointable("optimizer", shared(OptimizerState(sgd_state(d)?)))?;
    remove(out)?;
    let options = SaveOptions::default().with_archive_name("archive");
    let (sample, result) = measure(|| -> Result<(), BoxError> {
        let mut extra = Dict::new();
        extra.insert("iteration", Value::Int(d.iteration));
        let data = checkpointer.checkpoint_dict(extra)?;
        let mut writer = BufWriter::with_capacity(1 << 20, File::create(out)?);
        write_torch(&mut writer, &data, &options)?;
        writer.into_inner().map_err(|e| e.into_error())?;
        Ok(())
    });
    result?;
    Ok(sample)
}

/// `Checkpointer::resume_or_load(None, resume=True)` into a fresh model (zeros written before
/// the timer, as `torch.zeros` writes the Python contender's) and optimizer, then every byte
/// of the restored tensors (Python's `load_state_dict` copies them all).
fn checkpointer_resume(spec: &Spec, dir: &Path) -> Result<Sample, BoxError> {
    let d = &spec.detectron;
    let model = shared(StateDictModel::new(detectron_model(d, true)?));
    let optimizer = shared(OptimizerState(Value::None));
    let mut checkpointer = Checkpointer::new(model.clone(), dir);
    checkpointer.add_checkpointable("optimizer", optimizer.clone())?;
    let (mut sample, result) = measure(|| -> Result<(f64, u64, Option<i64>), BoxError> {
        let start = std::time::Instant::now();
        let extra = checkpointer.resume_or_load(None, true)?;
        let open = start.elapsed().as_secs_f64();
        let model = model.lock().map_err(|_| "model lock poisoned")?;
        let optimizer = optimizer.lock().map_err(|_| "optimizer lock poisoned")?;
        let sum = touch_state(model.tensors()).wrapping_add(touch_value(&optimizer.0));
        Ok((open, sum, extra.get("iteration").and_then(Value::as_int)))
    });
    let (open, sum, iteration) = result?;
    if iteration != Some(d.iteration) {
        return Err(format!("resumed iteration {iteration:?}, expected {}", d.iteration).into());
    }
    sample.open_seconds = Some(open);
    sample.checksum = Some(sum as f64);
    Ok(sample)
}

/// `Checkpointer::resume_or_load(None, resume=True)` of the big workload's checkpoint into a
/// fresh `StateDictModel` (zero tensors of the right shapes), then every byte of the model's
/// tensors: what a training script resuming a 1 GiB model pays. The zeros are written
/// before the timer, as `torch.zeros` writes them and as a model's initialised weights are
/// (the load writes into memory that is there), or with `lazy_zeros` made by
/// `Tensor::zeros`, whose pages the load provides.
///
/// `verify`: the resume checks the crc32 of every record as it copies it in (the default);
/// without, the row shows what the check costs.
fn big_resume(
    tensors: &[TensorSpec],
    dir: &Path,
    lazy_zeros: bool,
    verify: bool,
) -> Result<Sample, BoxError> {
    let mut state = StateDict::new();
    for t in tensors {
        let zeros = match lazy_zeros {
            true => Tensor::zeros(DType::Float32, &t.shape)?,
            false => written_zeros(&t.shape)?,
        };
        state.insert(t.name.clone(), zeros);
    }
    let model = shared(StateDictModel::new(state));
    let checkpointer = Checkpointer::new(model.clone(), dir).verify_on_resume(verify);
    let (mut sample, result) = measure(|| -> Result<(f64, u64), BoxError> {
        let start = std::time::Instant::now();
        checkpointer.resume_or_load(None, true)?;
        let open = start.elapsed().as_secs_f64();
        let model = model.lock().map_err(|_| "model lock poisoned")?;
        Ok((open, touch_state(model.tensors())))
    });
    let (open, sum) = result?;
    sample.open_seconds = Some(open);
    sample.checksum = Some(sum as f64);
    Ok(sample)
}

/// `align_and_update_state_dicts` of `n` model keys against `n` checkpoint keys.
fn matching(n: usize) -> Result<Sample, BoxError> {
    let keys = matching_keys(n);
    let tiny = Tensor::zeros(DType::Float32, &[4])?;
    let model: Vec<(String, Vec<usize>)> = keys.iter().map(|(m, _)| (m.clone(), vec![4])).collect();
    let ckpt: StateDict = keys
        .iter()
        .map(|(_, c)| (c.clone(), tiny.clone()))
        .collect();
    let (mut sample, result) = measure(|| align_and_update_state_dicts(&model, ckpt, false));
    let matched = result?.matched.len();
    if matched != n {
        return Err(format!("matched {matched} of {n} keys").into());
    }
    sample.note = Some(format!("{n} keys"));
    Ok(sample)
}

/// One copy of `len` bytes between two buffers already in memory.
fn memcpy(len: usize) -> Result<Sample, BoxError> {
    let src = vec![1u8; len];
    let mut dst = vec![0u8; len];
    dst.fill(2); // fault the pages in before the timer
    let (mut sample, ()) = measure(|| dst.copy_from_slice(&src));
    sample.checksum = Some(crate::state::touch_bytes(&dst[..len.min(4096)]) as f64);
    Ok(sample)
}
