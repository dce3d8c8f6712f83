//! Several ranks (threads sharing an in-process group) load one checkpoint that only some of
//! them can read: every rank ends with the same model, checkpointables and extras, and a
//! main worker without the file fails every rank instead of hanging.

use std::path::{Path, PathBuf};
use std::thread;

use ckpt::dist::{Communicator, InProcessComm};
use ckpt::resolve::Resolver;
use ckpt::DetectionCheckpointer;
use ckpt::{shared, Dict, Serde, Shared, StateDictModel, Value};
use serde::{Deserialize, Serialize};
use tracing::Level;

use crate::support::{at, captured, counting, fixture, values, zero_model};

const WORLD: usize = 4;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Optimizer {
    step: u64,
    lr: f64,
    momentum: Vec<f64>,
}

fn model() -> Shared<StateDictModel> {
    zero_model([("backbone.w", &[2usize, 3][..]), ("head.b", &[2][..])])
}

/// What one rank ended with after loading.
#[derive(Debug, PartialEq)]
struct RankState {
    weights: Vec<f32>,
    bias: Vec<f32>,
    optimizer: Optimizer,
    iteration: Option<i64>,
}

struct Rank {
    checkpointer: DetectionCheckpointer,
    model: Shared<StateDictModel>,
    optimizer: Shared<Serde<Optimizer>>,
}

fn rank(dir: &Path, comm: InProcessComm) -> Rank {
    let model = model();
    let optimizer = shared(Serde(Optimizer::default()));
    let mut checkpointer = DetectionCheckpointer::new(model.clone(), dir)
        .with_communicator(comm)
        .with_resolver(Resolver::local_only());
    checkpointer
        .add_checkpointable("optimizer", optimizer.clone())
        .unwrap();
    Rank {
        checkpointer,
        model,
        optimizer,
    }
}

impl Rank {
    fn state(&self, extra: &Dict) -> RankState {
        RankState {
            weights: values(&self.model, "backbone.w"),
            bias: values(&self.model, "head.b"),
            optimizer: self.optimizer.lock().unwrap().0.clone(),
            iteration: extra.get("iteration").and_then(Value::as_int),
        }
    }
}

/// Saves a trained state as `dir/model_0000099.pth` (and tags it) from a single process.
fn save_trained(dir: &Path) -> RankState {
    let model = model();
    {
        let mut m = model.lock().unwrap();
        m.set("backbone.w", counting(1.0, &[2, 3]));
        m.set("head.b", counting(-5.0, &[2]));
    }
    let trained = Optimizer {
        step: 100,
        lr: 0.02,
        momentum: vec![0.5, -0.25],
    };
    let mut checkpointer = DetectionCheckpointer::new(model.clone(), dir);
    checkpointer
        .add_checkpointable("optimizer", shared(Serde(trained.clone())))
        .unwrap();
    let mut extra = Dict::new();
    extra.insert("iteration", Value::Int(99));
    checkpointer.save("model_0000099", extra).unwrap();
    RankState {
        weights: values(&model, "backbone.w"),
        bias: values(&model, "head.b"),
        optimizer: trained,
        iteration: Some(99),
    }
}

/// Runs `body(rank, dir, comm)` on `WORLD` threads, each with its own directory, and
/// returns their results in rank order with what each logged.
fn run_ranks<T: Send + 'static>(
    dirs: &[PathBuf],
    body: impl Fn(usize, &Path, InProcessComm) -> T + Send + Sync + Clone + 'static,
) -> Vec<(T, Vec<(Level, String)>)> {
    let comms = InProcessComm::group(WORLD).unwrap();
    let handles: Vec<_> = comms
        .into_iter()
        .zip(dirs.iter().cloned())
        .enumerate()
        .map(|(r, (comm, dir))| {
            let body = body.clone();
            thread::spawn(move || captured(|| body(r, &dir, comm)))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn dirs() -> (Vec<tempfile::TempDir>, Vec<PathBuf>) {
    let temps: Vec<tempfile::TempDir> = (0..WORLD).map(|_| tempfile::tempdir().unwrap()).collect();
    let paths = temps.iter().map(|t| t.path().to_path_buf()).collect();
    (temps, paths)
}

#[test]
fn ranks_without_the_file_receive_the_whole_checkpoint_from_rank_zero() {
    let (_temps, dirs) = dirs();
    let saved = save_trained(&dirs[0]);
    let results = run_ranks(&dirs, |_, dir, comm| {
        let rank = rank(dir, comm);
        let path = dir.join("model_0000099.pth");
        let extra = rank
            .checkpointer
            .load(path.to_str().unwrap(), ckpt::Checkpointables::All)
            .unwrap();
        rank.state(&extra)
    });
    for (r, (state, lines)) in results.iter().enumerate() {
        assert_eq!(state, &saved, "rank {r}");
        let warnings = at(lines, Level::WARN);
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("Not all workers can read checkpoint")
                    && w.ends_with("Training may fail to fully resume.")),
            "rank {r}: {warnings:#?}"
        );
    }
}

#[test]
fn caffe2_weights_only_on_rank_zero_load_identically_everywhere() {
    let (_temps, dirs) = dirs();
    std::fs::copy(
        fixture("detection/faster_rcnn_c2.pkl"),
        dirs[0].join("R-50.pkl"),
    )
    .unwrap();
    let results = run_ranks(&dirs, |_, dir, comm| {
        let model = zero_model([("backbone.bottom_up.stem.conv1.norm.bias", &[4usize][..])]);
        let checkpointer = DetectionCheckpointer::new(model.clone(), dir)
            .with_communicator(comm)
            .with_resolver(Resolver::local_only());
        let path = dir.join("R-50.pkl");
        checkpointer
            .load(path.to_str().unwrap(), ckpt::Checkpointables::All)
            .unwrap();
        values(&model, "backbone.bottom_up.stem.conv1.norm.bias")
    });
    // res_conv1_bn_b is blob number 2 of the fixture: 2000, 2001, ...
    for (r, (bias, _)) in results.iter().enumerate() {
        assert_eq!(bias, &vec![2000.0, 2001.0, 2002.0, 2003.0], "rank {r}");
    }
}

#[test]
fn main_worker_without_the_file_fails_every_rank() {
    let (_temps, dirs) = dirs();
    save_trained(&dirs[1]);
    let results = run_ranks(&dirs, |_, dir, comm| {
        let rank = rank(dir, comm);
        let path = dir.join("model_0000099.pth");
        let result = rank
            .checkpointer
            .load(path.to_str().unwrap(), ckpt::Checkpointables::All);
        (
            result.map(|_| ()).map_err(|e| e.to_string()),
            rank.state(&Dict::new()),
        )
    });
    for (r, ((result, state), _)) in results.iter().enumerate() {
        let err = result.as_ref().unwrap_err();
        assert!(
            err.starts_with("File ") && err.contains("not found on main worker."),
            "rank {r}: {err}"
        );
        assert_eq!(state.weights, vec![0.0; 6], "rank {r} changed its model");
    }
}

#[test]
fn resume_follows_rank_zero_last_checkpoint_on_every_rank() {
    let (_temps, dirs) = dirs();
    let saved = save_trained(&dirs[0]);
    let results = run_ranks(&dirs, |_, dir, comm| {
        let rank = rank(dir, comm);
        let extra = rank.checkpointer.resume_or_load(None, true).unwrap();
        rank.state(&extra)
    });
    for (r, (state, _)) in results.iter().enumerate() {
        assert_eq!(state, &saved, "rank {r}");
    }
}

#[test]
fn only_the_main_process_saves_by_default() {
    let (_temps, dirs) = dirs();
    let results = run_ranks(&dirs, |r, dir, comm| {
        let main = comm.is_main_process();
        let rank = rank(dir, comm);
        rank.checkpointer.save("model_final", Dict::new()).unwrap();
        (r, main, dir.join("model_final.pth").exists())
    });
    for ((r, main, saved), _) in results {
        assert_eq!(main, r == 0);
        assert_eq!(saved, r == 0, "rank {r}");
    }
}

#[test]
fn an_explicit_save_to_disk_wins_over_the_rank_in_either_order() {
    let (_temps, dirs) = dirs();
    let results = run_ranks(&dirs, |r, dir, comm| {
        // Half the ranks say it before the communicator, half after.
        let checkpointer = if r % 2 == 0 {
            DetectionCheckpointer::new(model(), dir)
                .save_to_disk(true)
                .with_communicator(comm)
        } else {
            DetectionCheckpointer::new(model(), dir)
                .with_communicator(comm)
                .save_to_disk(true)
        };
        checkpointer.save("model_final", Dict::new()).unwrap();
        dir.join("model_final.pth").exists()
    });
    for (saved, _) in results {
        assert!(saved, "every rank saves when told to");
    }
}

/// A state the saved optimizer cannot become: its `step` is a number.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Strict {
    step: String,
}

#[test]
fn a_rank_that_fails_to_load_fails_every_rank_with_its_reason() {
    let (_temps, dirs) = dirs();
    save_trained(&dirs[0]);
    // Rank 2 reads the file itself, the others receive it from rank 0: both ways agree.
    std::fs::copy(
        dirs[0].join("model_0000099.pth"),
        dirs[2].join("model_0000099.pth"),
    )
    .unwrap();
    let results = run_ranks(&dirs, |r, dir, comm| {
        let mut checkpointer = DetectionCheckpointer::new(model(), dir)
            .with_communicator(comm)
            .with_resolver(Resolver::local_only());
        if r == 2 {
            checkpointer
                .add_checkpointable("optimizer", shared(Serde(Strict::default())))
                .unwrap();
        } else {
            checkpointer
                .add_checkpointable("optimizer", shared(Serde(Optimizer::default())))
                .unwrap();
        }
        let path = dir.join("model_0000099.pth");
        checkpointer
            .load(path.to_str().unwrap(), ckpt::Checkpointables::All)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    for (r, (result, _)) in results.iter().enumerate() {
        let err = result.as_ref().unwrap_err();
        assert!(
            err.starts_with("rank 2 could not load the checkpoint: ")
                && err.contains("key 'optimizer': cannot load its state"),
            "rank {r}: {err}"
        );
    }
}
