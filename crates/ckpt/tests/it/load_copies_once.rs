//! A checkpointer load copies every value once, straight from the file into the memory that
//! keeps it: the model's own tensors (written in place, also when checkpointables are
//! loaded with it), and the types of a checkpointable that copies what it loads. Copies out
//! of a file's map read the file, so a file truncated meanwhile is an error, not a `SIGBUS`.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use ckpt::{
    shared, Checkpointable, Checkpointer, DType, Dict, Model, StateDict, StateDictModel, Tensor,
    Value,
};

/// Large enough that copies of it read the file rather than its map.
const LEN: usize = 64 << 10;

fn counting(start: f32, len: usize) -> Tensor {
    let values: Vec<f32> = (0..len).map(|i| start + i as f32).collect();
    Tensor::from_slice(&values, &[len]).unwrap()
}

fn trained_state() -> StateDict {
    let mut sd = StateDict::new();
    sd.insert("backbone.w", counting(1.0, LEN));
    sd.insert("head.b", counting(-5.0, 16));
    sd
}

/// A model whose tensors are initialised (memory the model alone holds), as a real model's.
fn initialised_model() -> StateDictModel {
    let mut sd = StateDict::new();
    sd.insert("backbone.w", counting(0.5, LEN));
    sd.insert("head.b", counting(0.5, 16));
    StateDictModel::new(sd)
}

/// A checkpointable that keeps whatever state it is given.
struct Holder(Value);

impl Checkpointable for Holder {
    fn state_dict(&self) -> ckpt::Result<Value> {
        Ok(self.0.clone())
    }
    fn load_state_dict(&mut self, state: Value) -> ckpt::Result<()> {
        self.0 = state;
        Ok(())
    }
}

/// Momentum as a vector of its own: it copies what it loads, and says so.
#[derive(Default)]
struct Momentum {
    values: Vec<f32>,
    /// Whether the tensor it was given was still a view of the file (not copied first).
    got_a_view: bool,
}

impl Checkpointable for Momentum {
    fn state_dict(&self) -> ckpt::Result<Value> {
        Ok(Value::Tensor(Tensor::from_slice(
            &self.values,
            &[self.values.len()],
        )?))
    }
    fn load_state_dict(&mut self, state: Value) -> ckpt::Result<()> {
        let tensor = state
            .as_tensor()
            .ok_or_else(|| ckpt::Error::invalid("expected a tensor"))?;
        self.got_a_view = tensor.storage().is_mapped();
        self.values = tensor.to_vec::<f32>()?;
        Ok(())
    }
    fn keeps_loaded_tensors(&self) -> bool {
        false
    }
}

/// Saves the trained model with `optimizer` (a `Holder`) and `momentum` states, tagged.
fn save_checkpoint(dir: &Path) -> PathBuf {
    let mut checkpointer = Checkpointer::new(shared(StateDictModel::new(trained_state())), dir);
    checkpointer
        .add_checkpointable(
            "optimizer",
            shared(Holder(Value::Tensor(counting(7.0, LEN)))),
        )
        .unwrap();
    checkpointer
        .add_checkpointable(
            "momentum",
            shared(Momentum {
                values: counting(100.0, LEN).to_vec().unwrap(),
                got_a_view: false,
            }),
        )
        .unwrap();
    checkpointer.save("model_0000009", Dict::new()).unwrap();
    dir.join("model_0000009.pth")
}

fn truncate(path: &Path) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(0).unwrap();
    file.sync_all().unwrap();
}

#[test]
fn a_resume_with_checkpointables_writes_into_the_models_own_memory() {
    let dir = tempfile::tempdir().unwrap();
    let file = save_checkpoint(dir.path());
    let model = shared(initialised_model());
    let memory_before: Vec<usize> = model
        .lock()
        .unwrap()
        .tensors()
        .iter()
        .map(|(_, t)| t.storage().as_bytes().as_ptr() as usize)
        .collect();
    let optimizer = shared(Holder(Value::None));
    let mut checkpointer = Checkpointer::new(model.clone(), dir.path());
    checkpointer
        .add_checkpointable("optimizer", optimizer.clone())
        .unwrap();
    checkpointer.resume_or_load(None, true).unwrap();

    let model = model.lock().unwrap();
    for ((name, now), before) in model.tensors().iter().zip(memory_before) {
        assert_eq!(
            now.storage().as_bytes().as_ptr() as usize,
            before,
            "{name} was not written in place"
        );
        assert!(now.data_eq(trained_state().get(name).unwrap()), "{name}");
    }
    // The optimizer keeps its state: it got a copy of its own.
    truncate(&file);
    let optimizer = optimizer.lock().unwrap();
    let kept = optimizer.0.as_tensor().unwrap();
    assert!(!kept.storage().is_mapped());
    assert!(kept.data_eq(&counting(7.0, LEN)));
}

#[test]
fn a_checkpointable_that_keeps_only_copies_gets_the_files_values_without_a_copy_first() {
    let dir = tempfile::tempdir().unwrap();
    let file = save_checkpoint(dir.path());
    let momentum = shared(Momentum::default());
    let mut checkpointer = Checkpointer::new(shared(initialised_model()), dir.path());
    checkpointer
        .add_checkpointable("momentum", momentum.clone())
        .unwrap();
    checkpointer.resume_or_load(None, true).unwrap();
    truncate(&file);
    let momentum = momentum.lock().unwrap();
    assert!(
        momentum.got_a_view,
        "the checkpointer copied the state first"
    );
    assert_eq!(
        momentum.values,
        counting(100.0, LEN).to_vec::<f32>().unwrap()
    );
}

/// A model that refuses every load.
struct Refusing;

impl Model for Refusing {
    fn state_dict(&self) -> ckpt::Result<StateDict> {
        Ok(trained_state())
    }
    fn load_state_dict(&mut self, _state: StateDict) -> ckpt::Result<ckpt::LoadedKeys> {
        Err(ckpt::Error::invalid("refused"))
    }
}

#[test]
fn a_model_that_fails_to_load_leaves_the_checkpointables_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    save_checkpoint(dir.path());
    let before = Value::Tensor(counting(-1.0, 8));
    let optimizer = shared(Holder(before.clone()));
    let momentum = shared(Momentum::default());
    let mut checkpointer = Checkpointer::new(shared(Refusing), dir.path());
    checkpointer
        .add_checkpointable("optimizer", optimizer.clone())
        .unwrap();
    checkpointer
        .add_checkpointable("momentum", momentum.clone())
        .unwrap();
    let err = checkpointer.resume_or_load(None, true).unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    let kept = optimizer.lock().unwrap();
    assert!(kept
        .0
        .as_tensor()
        .unwrap()
        .data_eq(before.as_tensor().unwrap()));
    assert!(momentum.lock().unwrap().values.is_empty());
}

/// The `backbone.w` tensor of the checkpoint at `file`, a view of a map of the file.
fn mapped_weight(file: &Path) -> Tensor {
    let value = ckpt::format::load(file).unwrap();
    let w = value
        .get("model")
        .and_then(|m| m.get("backbone.w"))
        .and_then(Value::as_tensor)
        .unwrap()
        .clone();
    assert!(w.storage().is_mapped());
    w
}

#[test]
fn copying_a_large_tensor_out_of_the_map_of_a_truncated_file_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let file = save_checkpoint(dir.path());
    let w = mapped_weight(&file);
    let mut state = StateDict::new();
    state.insert("backbone.w", w.clone());
    let mut value = Value::Tensor(w.clone());
    truncate(&file);

    // Reading through the map now would kill the process with SIGBUS.
    let err = w.to_owned_as(DType::Float32).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(value.detach().is_err());
    let mut model = initialised_model();
    let err = model.load_state_dict(state).unwrap_err();
    assert!(err.to_string().contains("backbone.w"), "{err}");
}
