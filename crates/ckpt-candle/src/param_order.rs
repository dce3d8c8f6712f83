//! [`ParamOrder`]: the order of a model's parameters, taken from a checkpoint instead of
//! typed by hand.
//!
//! Optimizer state is numbered by parameter position (`state[3]` is the fourth parameter of
//! `model.parameters()`), so a candle run and a PyTorch run exchange it only when both
//! number the parameters alike. A torch checkpoint knows that order twice over: an
//! optimizer built from `model.named_parameters()` (torch ≥ 2.6) saves `param_names`, and
//! `model.state_dict()` lists the parameters in `parameters()` order (with the buffers of
//! each module after its parameters).

use std::path::Path;

use ckpt::format::flatten_tensors;
use ckpt::{Error as CkptError, StateDict, Value};

use crate::error::Result;
use crate::pretrained::MODEL_ENTRY;

/// The entry a checkpoint keeps its optimizer under (detectron2, fvcore, ckpt).
const OPTIMIZER_ENTRY: &str = "optimizer";

/// Parameter names in the order a model numbers its parameters, and where they came from.
///
/// Give it to [`crate::VarMapModel::with_param_order`]: the names the `VarMap` has are put
/// first in this order (names it lacks, such as buffers candle does not keep, are passed
/// over), and every variable of the `VarMap` must be among them.
///
/// ```no_run
/// use candle_core::{DType, Device};
/// use candle_nn::{linear, VarBuilder, VarMap};
/// use ckpt_candle::{AdamW, AdamWConfig, ParamOrder, VarMapModel};
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let _fc1 = linear(16, 64, vb.pp("fc1"))?;
/// let _fc2 = linear(64, 4, vb.pp("fc2"))?;
/// // The order of the torch run that wrote the checkpoint:
/// let order = ParamOrder::from_file("torch_run/model_final.pth")?;
/// let model = VarMapModel::new(varmap).with_param_order(&order)?;
/// let optimizer = AdamW::from_model(&model, AdamWConfig::default())?;
/// # Ok::<(), ckpt_candle::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamOrder {
    names: Vec<String>,
    source: String,
}

impl ParamOrder {
    /// `names` in this order; `source` says where they come from (for error messages).
    pub fn new<I, S>(names: I, source: impl Into<String>) -> ParamOrder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ParamOrder {
            names: names.into_iter().map(Into::into).collect(),
            source: source.into(),
        }
    }

    /// The key order of a state dict (`model.state_dict()` lists parameters in
    /// `model.parameters()` order).
    pub fn of_state_dict(state: &StateDict) -> ParamOrder {
        ParamOrder::new(state.keys(), "a state dict")
    }

    /// The `param_names` an optimizer state saved (torch ≥ 2.6 saves them when the
    /// optimizer was built from `model.named_parameters()`), group after group: exactly
    /// the parameters the optimizer numbers, in its order.
    pub fn of_optimizer_state(state: &Value) -> Result<ParamOrder> {
        Ok(ParamOrder::of_optimizer(state)?)
    }

    fn of_optimizer(state: &Value) -> ckpt::Result<ParamOrder> {
        let names = optimizer_param_names(state)?.ok_or_else(|| {
            CkptError::key(
                "param_groups",
                "the optimizer state has no param_names (torch saves them when the optimizer \
                 is built from model.named_parameters())",
            )
        })?;
        Ok(ParamOrder::new(
            names,
            "the param_names of an optimizer state",
        ))
    }

    /// The order a checkpoint gives: the `param_names` of its `optimizer` entry (or of the
    /// whole checkpoint, when it is an optimizer state) when it saved them, else the key
    /// order of its `model` entry, else of the whole checkpoint as a state dict.
    pub fn of_checkpoint(checkpoint: &Value) -> Result<ParamOrder> {
        Ok(ParamOrder::of_value(checkpoint)?)
    }

    fn of_value(checkpoint: &Value) -> ckpt::Result<ParamOrder> {
        let top = checkpoint.as_dict().ok_or_else(|| {
            CkptError::format(format!(
                "expected the checkpoint to be a dict, found a {}",
                checkpoint.type_name()
            ))
        })?;
        if top.get("param_groups").is_some() {
            return ParamOrder::of_optimizer(checkpoint);
        }
        if let Some(optimizer) = top.get(OPTIMIZER_ENTRY) {
            if let Some(names) =
                optimizer_param_names(optimizer).map_err(|e| e.in_entry(OPTIMIZER_ENTRY))?
            {
                return Ok(ParamOrder::new(
                    names,
                    "the param_names of the 'optimizer' entry",
                ));
            }
        }
        let (model, source) = match top.get(MODEL_ENTRY) {
            Some(model @ Value::Dict(_)) => (model, "the key order of the 'model' entry"),
            _ => (checkpoint, "the key order of the checkpoint"),
        };
        let (state, _) = flatten_tensors(model);
        if state.is_empty() {
            return Err(CkptError::invalid(format!(
                "no tensor names to take an order from in {}",
                source.trim_start_matches("the key order of ")
            )));
        }
        Ok(ParamOrder::new(state.keys(), source))
    }

    /// [`ParamOrder::of_checkpoint`] of the file `path` (any format ckpt reads).
    pub fn from_file(path: impl AsRef<Path>) -> Result<ParamOrder> {
        let path = path.as_ref();
        let checkpoint = ckpt::format::load(path)?;
        let mut order = ParamOrder::of_value(&checkpoint).map_err(|e| e.in_file(path))?;
        order.source = format!("{} of {}", order.source, path.display());
        Ok(order)
    }

    /// This order followed by `names` (variables a model adds to the checkpoint's, such as
    /// a new head).
    pub fn then<I, S>(mut self, names: I) -> ParamOrder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.names.extend(names.into_iter().map(Into::into));
        self
    }

    /// The names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Where the names come from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// The `param_names` of every parameter group of an optimizer state, in order; `None` when
/// the groups have none.
fn optimizer_param_names(state: &Value) -> ckpt::Result<Option<Vec<String>>> {
    let groups = match state.get("param_groups") {
        Some(Value::List(groups)) | Some(Value::Tuple(groups)) => groups,
        _ => return Ok(None),
    };
    let mut names = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        let key = format!("param_groups[{g}].param_names");
        match group.get("param_names") {
            None => return Ok(None),
            Some(Value::List(items)) | Some(Value::Tuple(items)) => {
                for item in items {
                    let name = item.as_str().ok_or_else(|| {
                        CkptError::key(
                            &key,
                            format!("expected names, found a {}", item.type_name()),
                        )
                    })?;
                    names.push(name.to_string());
                }
            }
            Some(other) => {
                return Err(CkptError::key(
                    key,
                    format!("expected a list of names, found a {}", other.type_name()),
                ))
            }
        }
    }
    Ok(Some(names))
}
