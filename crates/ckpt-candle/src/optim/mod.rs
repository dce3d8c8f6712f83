//! Optimizers for candle variables whose checkpoint state is torch's: [`AdamW`] and [`Sgd`]
//! (with momentum). Both implement `candle_nn::Optimizer` and [`ckpt::Checkpointable`].

/// What the optimizers of this module share: their constructors, accessors and
/// `candle_nn::Optimizer`. For a struct `$optimizer` with fields `params: Params`,
/// `config: $config` (with an `lr` and a `validate` method) and `$slots`, a state slot per
/// parameter, and a function `$optimizer::step_one(&config, var, slot, grad)` that updates one
/// parameter. `$name` names the optimizer in warnings.
macro_rules! torch_optimizer {
    ($optimizer:ident, $config:ident, $slots:ident, $name:literal) => {
        impl $optimizer {
            /// An optimizer over the variables of `model`, numbered in the model's order (the
            /// same in every process, unlike `varmap.all_vars()`'s), named by their names in
            /// messages.
            pub fn from_model(
                model: &crate::VarMapModel,
                config: $config,
            ) -> crate::error::Result<$optimizer> {
                $optimizer::with_params(Params::named(model.vars()), config)
            }

            /// An optimizer over `vars`, numbered in this order and named by these names in
            /// messages: e.g. a model's variables without its batch-norm running statistics,
            /// which torch keeps as buffers, not parameters.
            pub fn from_named_vars(
                vars: Vec<(String, candle_core::Var)>,
                config: $config,
            ) -> crate::error::Result<$optimizer> {
                $optimizer::with_params(Params::named(vars), config)
            }

            fn with_params(params: Params, config: $config) -> crate::error::Result<$optimizer> {
                config.validate()?;
                let $slots = vec![None; params.len()];
                Ok($optimizer {
                    params,
                    config,
                    $slots,
                })
            }

            /// The hyperparameters.
            pub fn config(&self) -> &$config {
                &self.config
            }

            /// The parameters, in index order.
            pub fn params(&self) -> &[candle_core::Var] {
                &self.params.vars
            }
        }

        impl candle_nn::Optimizer for $optimizer {
            type Config = $config;

            /// Float variables only (as candle's own optimizers); the others are not
            /// numbered. Refuses the hyperparameters torch refuses.
            fn new(
                vars: Vec<candle_core::Var>,
                config: $config,
            ) -> candle_core::Result<$optimizer> {
                Ok($optimizer::with_params(Params::new(vars), config)?)
            }

            /// Updates every parameter that has a gradient; the others are skipped, as torch
            /// skips them, and named in a `tracing` warning at the first step.
            fn step(
                &mut self,
                grads: &candle_core::backprop::GradStore,
            ) -> candle_core::Result<()> {
                let config = self.config;
                self.params
                    .step_each(grads, $name, &mut self.$slots, |var, slot, grad| {
                        $optimizer::step_one(&config, var, slot, grad)
                    })
            }

            fn learning_rate(&self) -> f64 {
                self.config.lr
            }

            fn set_learning_rate(&mut self, lr: f64) {
                self.config.lr = lr;
            }
        }
    };
}

mod adamw;
mod sgd;
mod torch_state;

pub use adamw::{AdamW, AdamWConfig};
pub use sgd::{Sgd, SgdConfig};

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// The parameters an optimizer numbers (the float variables, as candle's own optimizers
/// take), with the labels its messages name them by.
#[derive(Debug, Clone)]
struct Params {
    vars: Vec<Var>,
    /// The variable's name when the optimizer was built from a model, else its index and
    /// shape.
    labels: Vec<String>,
    /// Whether the labels are names (the optimizer was built from a model).
    named: bool,
    /// Whether a step has looked for parameters without a gradient yet.
    checked_grads: bool,
}

impl Params {
    /// `vars` in the order given, numbered from 0.
    fn new(vars: Vec<Var>) -> Params {
        let vars: Vec<Var> = vars.into_iter().filter(|v| v.dtype().is_float()).collect();
        let labels = vars
            .iter()
            .enumerate()
            .map(|(i, v)| format!("parameter {i} (shape {:?})", v.dims()))
            .collect();
        Params {
            vars,
            labels,
            named: false,
            checked_grads: false,
        }
    }

    /// The variables of a model, with their names.
    fn named(vars: Vec<(String, Var)>) -> Params {
        let (labels, vars) = vars
            .into_iter()
            .filter(|(_, v)| v.dtype().is_float())
            .unzip();
        Params {
            vars,
            labels,
            named: true,
            checked_grads: false,
        }
    }

    fn len(&self) -> usize {
        self.vars.len()
    }

    /// One optimizer step: warns (at the first step) of the parameters `grads` has no
    /// gradient for, then calls `update` on every other one with its state slot.
    fn step_each<S>(
        &mut self,
        grads: &GradStore,
        optimizer: &str,
        slots: &mut [Option<S>],
        mut update: impl FnMut(&Var, &mut Option<S>, &Tensor) -> candle_core::Result<()>,
    ) -> candle_core::Result<()> {
        self.warn_once_without_grad(grads, optimizer);
        for (index, var, grad) in self.with_grads(grads) {
            if let Some(slot) = slots.get_mut(index) {
                update(var, slot, grad)?;
            }
        }
        Ok(())
    }

    /// At the first step only: names, in a warning, the parameters `grads` has no gradient
    /// for. They are not updated (torch skips them too); a layer that silently does not
    /// train shows up here.
    fn warn_once_without_grad(&mut self, grads: &GradStore, optimizer: &str) {
        if std::mem::replace(&mut self.checked_grads, true) {
            return;
        }
        let without: Vec<&str> = self
            .vars
            .iter()
            .zip(&self.labels)
            .filter(|(var, _)| grads.get(var).is_none())
            .map(|(_, label)| label.as_str())
            .collect();
        if !without.is_empty() {
            tracing::warn!(
                "{optimizer}: {} of {} parameters got no gradient at the first step and are \
                 not updated (the loss does not depend on them): {}",
                without.len(),
                self.len(),
                crate::names::list(&without)
            );
        }
    }

    /// The parameters `grads` has a gradient for, with their index, in order.
    fn with_grads<'a>(
        &'a self,
        grads: &'a GradStore,
    ) -> impl Iterator<Item = (usize, &'a Var, &'a Tensor)> + 'a {
        self.vars
            .iter()
            .enumerate()
            .filter_map(|(index, var)| grads.get(var).map(|grad| (index, var, grad)))
    }
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
