//! How burn's parameter paths become state-dict names: [`TorchNames`].
//!
//! burn names a parameter by its field path (`encoder.layers.0.weight`), as torch does, but
//! stores some layers differently from torch: a `Linear` weight is `[in, out]` (torch:
//! `[out, in]`), and the norm layers call their scale and shift `gamma` and `beta` (torch:
//! `weight` and `bias`). The convention here is burn-store's `PyTorchToBurnAdapter`, so a
//! file burn-store reads loads the same way through ckpt.

/// The container types burn's `Module` derive reports for the layers that need renaming.
const LINEAR: &str = "Struct:Linear";
const NORMS: [&str; 4] = [
    "Struct:BatchNorm",
    "Struct:LayerNorm",
    "Struct:GroupNorm",
    "Struct:RmsNorm",
];

/// Which of burn-store's torch conventions a [`crate::BurnModel`] applies to its state dict.
///
/// ```
/// let names = ckpt_burn::TorchNames::torch().with_transpose_linear(false);
/// assert!(names.renames_norms());
/// assert!(!names.transposes_linear());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TorchNames {
    transpose_linear: bool,
    rename_norms: bool,
}

impl Default for TorchNames {
    /// [`TorchNames::torch`].
    fn default() -> TorchNames {
        TorchNames::torch()
    }
}

impl TorchNames {
    /// torch's layout: `Linear` weights transposed to `[out, in]`, norm `gamma`/`beta`
    /// named `weight`/`bias`.
    pub fn torch() -> TorchNames {
        TorchNames {
            transpose_linear: true,
            rename_norms: true,
        }
    }

    /// burn's own names and layouts, unchanged.
    pub fn burn() -> TorchNames {
        TorchNames {
            transpose_linear: false,
            rename_norms: false,
        }
    }

    /// Whether `Linear` weights are transposed.
    pub fn with_transpose_linear(mut self, on: bool) -> TorchNames {
        self.transpose_linear = on;
        self
    }

    /// Whether norm layers' `gamma`/`beta` are named `weight`/`bias`.
    pub fn with_rename_norms(mut self, on: bool) -> TorchNames {
        self.rename_norms = on;
        self
    }

    /// Whether `Linear` weights are transposed.
    pub fn transposes_linear(&self) -> bool {
        self.transpose_linear
    }

    /// Whether norm layers' `gamma`/`beta` are renamed.
    pub fn renames_norms(&self) -> bool {
        self.rename_norms
    }

    /// The state-dict name of the parameter `field` of a layer of `container` type (as
    /// burn's visitor reports it), and whether its tensor is transposed.
    pub(crate) fn name_of<'a>(&self, field: &'a str, container: &str) -> (&'a str, bool) {
        if self.transpose_linear && container == LINEAR && field == "weight" {
            return (field, true);
        }
        if self.rename_norms && NORMS.contains(&container) {
            match field {
                "gamma" => return ("weight", false),
                "beta" => return ("bias", false),
                _ => {}
            }
        }
        (field, false)
    }
}

/// The path of module names burn's visitor is in, with the container type of each.
#[derive(Debug, Default)]
pub(crate) struct PathStack {
    entries: Vec<(String, String)>,
}

impl PathStack {
    pub fn enter(&mut self, name: &str, container: &str) {
        self.entries.push((name.to_string(), container.to_string()));
    }

    pub fn exit(&mut self) {
        self.entries.pop();
    }

    /// The state-dict name of the parameter at the current path under `names`, and whether
    /// it is transposed. An enum's variant name is not part of torch's path (torch has no
    /// enums), so it is left out.
    pub fn param_name(&self, names: &TorchNames) -> (String, bool) {
        let Some(((field, container), parents)) = self.entries.split_last() else {
            return (String::new(), false);
        };
        let (leaf, transposed) = names.name_of(field, container);
        let mut out = String::new();
        for (name, container) in parents {
            if container.starts_with("Enum:") {
                continue;
            }
            out.push_str(name);
            out.push('.');
        }
        out.push_str(leaf);
        (out, transposed)
    }
}
