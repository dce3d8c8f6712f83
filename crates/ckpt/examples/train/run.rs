//! The training loop of this example: the network of [`mlp`] trained by [`sgd`], resumed and
//! checkpointed by the shared [`driver`]; it reports the final loss and a checksum of the
//! weights.

// Also compiled into the resume test, which uses a different subset.
#![allow(dead_code)]

use ckpt::{shared, Checkpointer, Shared, StateDictModel};

use super::driver::{self, BoxResult, Config, Outcome};
use super::{mlp, sgd};

/// Resumes from `config.save_dir` if it has a checkpoint, then trains up to `max_iter`.
pub fn run(config: &Config) -> BoxResult<Outcome<Shared<StateDictModel>>> {
    let data = mlp::synthetic_data();
    let model = shared(StateDictModel::new(mlp::initial_state()?));
    let optimizer = shared(sgd::Sgd::new(mlp::shapes().to_vec(), 0.05, 0.9));

    let mut checkpointer = Checkpointer::new(model.clone(), &config.save_dir);
    checkpointer.add_checkpointable("optimizer", optimizer.clone())?;
    let progress = driver::train(config, checkpointer, |_| {
        let mut params = mlp::read_params(&model)?;
        let (loss, grads) = mlp::loss_and_grads(&params, &data);
        optimizer
            .lock()
            .map_err(|_| "optimizer lock poisoned")?
            .step(&mut params, &grads);
        mlp::write_params(&model, &params)?;
        Ok(loss)
    })?;
    let params = mlp::read_params(&model)?;
    let (loss, _) = mlp::loss_and_grads(&params, &data);
    Ok(progress.ended(loss, mlp::checksum(&params), model))
}
