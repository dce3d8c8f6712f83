//! Optimizers for candle variables whose checkpoint state is torch's: [`AdamW`] and [`Sgd`]
//! (with momentum). Both implement `candle_nn::Optimizer` and [`ckpt::Checkpointable`].

mod adamw;
mod sgd;
mod torch_state;

pub use adamw::{AdamW, AdamWConfig};
pub use sgd::{Sgd, SgdConfig};

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// The variables an optimizer numbers: the float ones, as candle's own optimizers take.
fn float_vars(vars: Vec<Var>) -> Vec<Var> {
    vars.into_iter().filter(|v| v.dtype().is_float()).collect()
}

/// Runs `step_one(index, grad)` for every parameter that has a gradient, in parameter order.
fn step_each(
    params: &[Var],
    grads: &GradStore,
    mut step_one: impl FnMut(usize, &Tensor) -> candle_core::Result<()>,
) -> candle_core::Result<()> {
    for (index, var) in params.iter().enumerate() {
        if let Some(grad) = grads.get(var).cloned() {
            step_one(index, &grad)?;
        }
    }
    Ok(())
}

/// A ckpt error as a candle error, for the `candle_core::Result`s of `Optimizer`.
fn to_candle_error(e: ckpt::Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// `x` as a 0-d tensor of `like`'s dtype and device (rounded once, as torch rounds a
/// Python float operand to the tensor's dtype).
fn scalar_like(x: f64, like: &Tensor) -> candle_core::Result<Tensor> {
    Tensor::new(x, like.device())?.to_dtype(like.dtype())
}

/// torch's `lerp(start, end, weight)` with a scalar weight: `start + weight * (end - start)`
/// for `|weight| < 0.5`, else `end - (end - start) * (1 - weight)` (the form that is exact
/// at the nearer end).
fn lerp(start: &Tensor, end: &Tensor, weight: f64) -> candle_core::Result<Tensor> {
    let diff = (end - start)?;
    if weight.abs() < 0.5 {
        diff.affine(weight, 0.0)? + start
    } else {
        // `1 - weight` computed in the tensor's precision, as torch's kernel does.
        let w = scalar_like(weight, start)?;
        let one_minus = (w.ones_like()? - w)?;
        end - diff.broadcast_mul(&one_minus)?
    }
}
