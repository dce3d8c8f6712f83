//! After a checkpointer load, the model, the checkpointables and the extras it returns own
//! their memory: the checkpoint file may then be truncated (a torn in-place write by another
//! program) or rewritten in place (`torch.save` to the same path) without the process dying
//! of `SIGBUS` or the loaded values changing. Views of a memory map would do both.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread;

use ckpt::dist::InProcessComm;
use ckpt::resolve::Resolver;
use ckpt::DetectionCheckpointer;
use ckpt::{
    shared, Checkpointable, Checkpointer, Dict, Shared, StateDict, StateDictModel, Tensor, Value,
};

use crate::support::counting;

/// A checkpointable that keeps whatever state it is given (as an optimizer keeps tensors).
#[derive(Debug)]
struct Holder(Value);

impl Default for Holder {
    fn default() -> Holder {
        Holder(Value::None)
    }
}

impl Checkpointable for Holder {
    fn state_dict(&self) -> ckpt::Result<Value> {
        Ok(self.0.clone())
    }
    fn load_state_dict(&mut self, state: Value) -> ckpt::Result<()> {
        self.0 = state;
        Ok(())
    }
}

/// The trained model: large enough that its tensors span many pages of the file.
fn trained_state() -> StateDict {
    let mut sd = StateDict::new();
    sd.insert("backbone.w", counting(1.0, &[256, 64]));
    sd.insert("head.b", counting(-5.0, &[64]));
    sd
}

fn zero_model() -> Shared<StateDictModel> {
    let sd: StateDict = trained_state()
        .iter()
        .map(|(name, t)| {
            (
                name.to_string(),
                Tensor::zeros(t.dtype(), t.shape()).unwrap(),
            )
        })
        .collect();
    shared(StateDictModel::new(sd))
}

fn optimizer_state() -> Value {
    let mut state = Dict::new();
    state.insert("momentum", Value::Tensor(counting(100.0, &[128, 32])));
    state.insert("step", Value::Int(3));
    Value::Dict(state)
}

fn ema() -> Tensor {
    counting(0.5, &[32, 32])
}

/// Saves model + optimizer + `ema` + `iteration` in `dir` (tagged) and returns the file.
fn save_checkpoint(dir: &Path) -> PathBuf {
    let model = shared(StateDictModel::new(trained_state()));
    let mut checkpointer = Checkpointer::new(model, dir);
    checkpointer
        .add_checkpointable("optimizer", shared(Holder(optimizer_state())))
        .unwrap();
    let mut extra = Dict::new();
    extra.insert("ema", Value::Tensor(ema()));
    extra.insert("iteration", Value::Int(99));
    checkpointer.save("model_0000099", extra).unwrap();
    dir.join("model_0000099.pth")
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Cut to 0 bytes.
    Truncate,
    /// Every byte overwritten through a file opened for writing (no new file, no rename).
    Overwrite,
}

fn damage(path: &Path, how: Damage) {
    let len = std::fs::metadata(path).unwrap().len();
    let mut file = OpenOptions::new().write(true).open(path).unwrap();
    match how {
        Damage::Truncate => file.set_len(0).unwrap(),
        Damage::Overwrite => file.write_all(&vec![0xAB; len as usize]).unwrap(),
    }
    file.sync_all().unwrap();
}

/// What a load gave: the model, the optimizer's state and the returned extras.
struct Loaded {
    model: Shared<StateDictModel>,
    optimizer: Shared<Holder>,
    extra: Dict,
}

/// Reads every tensor of `loaded` and compares it with what was saved.
fn assert_intact(loaded: &Loaded) {
    let model = loaded.model.lock().unwrap();
    for (name, saved) in trained_state().iter() {
        let now = model.get(name).unwrap();
        assert!(now.data_eq(saved), "model tensor {name} changed");
        assert!(
            !now.storage().is_mapped(),
            "model tensor {name} is a map view"
        );
    }
    let optimizer = loaded.optimizer.lock().unwrap();
    let momentum = optimizer
        .0
        .get("momentum")
        .and_then(Value::as_tensor)
        .unwrap();
    assert!(!momentum.storage().is_mapped());
    let expected = optimizer_state();
    assert!(momentum.data_eq(expected.get("momentum").and_then(Value::as_tensor).unwrap()));
    let ema_now = loaded.extra.get("ema").and_then(Value::as_tensor).unwrap();
    assert!(!ema_now.storage().is_mapped());
    assert!(ema_now.data_eq(&ema()));
    assert_eq!(
        loaded.extra.get("iteration").and_then(Value::as_int),
        Some(99)
    );
}

fn resume_with_checkpointer(dir: &Path) -> Loaded {
    let model = zero_model();
    let optimizer = shared(Holder::default());
    let mut checkpointer = Checkpointer::new(model.clone(), dir);
    checkpointer
        .add_checkpointable("optimizer", optimizer.clone())
        .unwrap();
    let extra = checkpointer.resume_or_load(None, true).unwrap();
    Loaded {
        model,
        optimizer,
        extra,
    }
}

fn load_with_detection_checkpointer(file: &Path) -> Loaded {
    let model = zero_model();
    let optimizer = shared(Holder::default());
    let mut checkpointer =
        DetectionCheckpointer::new(model.clone(), "").with_resolver(Resolver::local_only());
    checkpointer
        .add_checkpointable("optimizer", optimizer.clone())
        .unwrap();
    let extra = checkpointer
        .load(file.to_str().unwrap(), ckpt::Checkpointables::All)
        .unwrap();
    Loaded {
        model,
        optimizer,
        extra,
    }
}

fn checkpointer_case(how: Damage) {
    let dir = tempfile::tempdir().unwrap();
    let file = save_checkpoint(dir.path());
    let loaded = resume_with_checkpointer(dir.path());
    damage(&file, how);
    assert_intact(&loaded);
}

#[test]
fn a_resumed_model_survives_its_file_being_truncated() {
    checkpointer_case(Damage::Truncate);
}

#[test]
fn a_resumed_model_keeps_its_values_when_its_file_is_rewritten_in_place() {
    checkpointer_case(Damage::Overwrite);
}

fn detection_case(how: Damage) {
    let dir = tempfile::tempdir().unwrap();
    let file = save_checkpoint(dir.path());
    let loaded = load_with_detection_checkpointer(&file);
    damage(&file, how);
    assert_intact(&loaded);
}

#[test]
fn a_detection_checkpointer_load_survives_its_file_being_truncated() {
    detection_case(Damage::Truncate);
}

#[test]
fn a_detection_checkpointer_load_keeps_its_values_when_its_file_is_rewritten() {
    detection_case(Damage::Overwrite);
}

/// Every rank of a job reads the same file (the usual shared directory); each keeps only
/// memory of its own.
fn multi_rank_case(how: Damage) {
    const WORLD: usize = 2;
    let dir = tempfile::tempdir().unwrap();
    let file = save_checkpoint(dir.path());
    let comms = InProcessComm::group(WORLD).unwrap();
    let loaded: Vec<Loaded> = thread::scope(|scope| {
        let handles: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                let dir = dir.path();
                scope.spawn(move || {
                    let model = zero_model();
                    let optimizer = shared(Holder::default());
                    let mut checkpointer = DetectionCheckpointer::new(model.clone(), dir)
                        .with_communicator(comm)
                        .with_resolver(Resolver::local_only());
                    checkpointer
                        .add_checkpointable("optimizer", optimizer.clone())
                        .unwrap();
                    let extra = checkpointer.resume_or_load(None, true).unwrap();
                    Loaded {
                        model,
                        optimizer,
                        extra,
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    damage(&file, how);
    for rank in &loaded {
        assert_intact(rank);
    }
}

#[test]
fn every_rank_survives_the_shared_file_being_truncated() {
    multi_rank_case(Damage::Truncate);
}

#[test]
fn every_rank_keeps_its_values_when_the_shared_file_is_rewritten() {
    multi_rank_case(Damage::Overwrite);
}

#[test]
fn explicit_map_views_still_see_the_file() {
    // Zero-copy reading stays available where it is asked for: `format::load` maps.
    let dir = tempfile::tempdir().unwrap();
    let file = save_checkpoint(dir.path());
    let value = ckpt::format::load(&file).unwrap();
    let w = value
        .get("model")
        .and_then(|m| m.get("backbone.w"))
        .and_then(Value::as_tensor)
        .unwrap();
    assert!(w.storage().is_mapped());
}
