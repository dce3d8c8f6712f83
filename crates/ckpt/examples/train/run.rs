//! The training loop: resume from the save directory if it has a checkpoint, train with
//! periodic checkpoints, report the final loss and a checksum of the weights.

// Also compiled into the resume test, which uses a different subset.
#![allow(dead_code)]

use std::path::PathBuf;

use ckpt::{shared, Checkpointer, Dict, PeriodicCheckpointer, StateDictModel};

use crate::{mlp, sgd};

pub struct Config {
    pub save_dir: PathBuf,
    pub max_iter: u64,
    pub period: u64,
    pub max_to_keep: Option<usize>,
    /// Stop after this iteration, as if the job were preempted.
    pub stop_at: Option<u64>,
}

pub struct Outcome {
    /// The first iteration this run trained (0 unless it resumed).
    pub started_at: u64,
    /// The iteration after which it stopped early, if it did.
    pub stopped_at: Option<u64>,
    /// Loss of the weights when the run ended.
    pub loss: f32,
    /// [`mlp::checksum`] of the weights when the run ended.
    pub checksum: u64,
}

pub fn run(config: &Config) -> ckpt::Result<Outcome> {
    let data = mlp::synthetic_data();
    let model = shared(StateDictModel::new(mlp::initial_state()?));
    let optimizer = shared(sgd::Sgd::new(mlp::shapes().to_vec(), 0.05, 0.9));

    let mut checkpointer = Checkpointer::new(model.clone(), &config.save_dir);
    checkpointer.add_checkpointable("optimizer", optimizer.clone())?;
    let extra = checkpointer.resume_or_load(None, true)?;
    let started_at = extra
        .get("iteration")
        .and_then(|v| v.as_int())
        .map_or(0, |i| i as u64 + 1);
    if started_at > 0 {
        println!("resumed at iteration {started_at}");
    }
    let mut periodic = PeriodicCheckpointer::builder(checkpointer)
        .period(config.period)
        .max_iter(config.max_iter)
        .max_to_keep(config.max_to_keep)
        .build()?;

    let mut stopped_at = None;
    for iteration in started_at..config.max_iter {
        let mut params = mlp::read_params(&model)?;
        let (loss, grads) = mlp::loss_and_grads(&params, &data);
        optimizer
            .lock()
            .map_err(|_| ckpt::Error::invalid("optimizer lock poisoned"))?
            .step(&mut params, &grads);
        mlp::write_params(&model, &params)?;
        if iteration % 50 == 0 {
            println!("iteration {iteration}: loss {loss:.6}");
        }
        periodic.step(iteration, Dict::new())?;
        if config.stop_at == Some(iteration) {
            stopped_at = Some(iteration);
            break;
        }
    }
    let params = mlp::read_params(&model)?;
    let (loss, _) = mlp::loss_and_grads(&params, &data);
    Ok(Outcome {
        started_at,
        stopped_at,
        loss,
        checksum: mlp::checksum(&params),
    })
}
