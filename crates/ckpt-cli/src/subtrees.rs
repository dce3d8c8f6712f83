//! Sub-trees repeated in a checkpoint, found by a keyed hash of their contents as `ckpt
//! inspect` lists them: an object a file shares in many places reads as a copy at each place,
//! and listing every copy again would cost the copies times their depth.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

use ckpt::walk::{children, Step};
use ckpt::{Key, Value};

use crate::inspect::{repr, Totals};

/// Containers whose listing costs less than this many path steps (entries times depth)
/// are listed again wherever they repeat: small repeated dicts stay readable in place.
pub const SHARED_MIN_STEPS: usize = 32;

/// What the listing of one container holds.
pub struct Subtree {
    /// A keyed hash of its contents as listed (steps, types, values, tensors' storages).
    pub hash: u64,
    /// Entries its listing has.
    pub entries: usize,
    /// What those entries add to the totals.
    pub totals: Totals,
}

/// The [`Subtree`] of every non-empty container of a tree, by address. The hash is keyed
/// per run (std's `RandomState`), so a file cannot be made to collide two sub-trees.
pub struct Fingerprints {
    by_address: HashMap<*const Value, Subtree>,
}

impl Fingerprints {
    /// One post-order pass with an explicit stack (deep trees do not overflow the stack).
    pub fn of(root: &Value) -> Fingerprints {
        let state = RandomState::new();
        let mut by_address = HashMap::new();
        let start = |value: &Value| {
            let mut hasher = state.build_hasher();
            value.type_name().hash(&mut hasher);
            let mut totals = Totals::default();
            let opened = matches!(value, Value::Object(_));
            if opened {
                totals.values = 1;
                totals.opaque = 1;
                repr(value).hash(&mut hasher);
            }
            (hasher, usize::from(opened), totals)
        };
        let Some(children_of_root) = children(root) else {
            return Fingerprints { by_address };
        };
        let mut frames = vec![(root, children_of_root, start(root))];
        while let Some((_, children_iter, (hasher, entries, totals))) = frames.last_mut() {
            match children_iter.next() {
                Some((step, child)) => {
                    hash_step(&step, hasher);
                    if let Some(grandchildren) = children(child) {
                        frames.push((child, grandchildren, start(child)));
                        continue;
                    }
                    hasher.write_u64(leaf_hash(&state, child));
                    *entries += 1;
                    if let Some(tensor) = child.as_tensor() {
                        totals.tensors += 1;
                        totals.tensor_bytes =
                            totals.tensor_bytes.saturating_add(tensor.nbytes() as u64);
                    } else {
                        totals.values += 1;
                        totals.opaque += usize::from(matches!(child, Value::Object(_)));
                    }
                }
                None => {
                    let Some((value, _, (hasher, entries, totals))) = frames.pop() else {
                        break;
                    };
                    let hash = hasher.finish();
                    if let Some((_, _, (parent, parent_entries, parent_totals))) = frames.last_mut()
                    {
                        parent.write_u64(hash);
                        *parent_entries += entries;
                        parent_totals.tensors += totals.tensors;
                        parent_totals.tensor_bytes = parent_totals
                            .tensor_bytes
                            .saturating_add(totals.tensor_bytes);
                        parent_totals.values += totals.values;
                        parent_totals.opaque += totals.opaque;
                    }
                    by_address.insert(
                        value as *const Value,
                        Subtree {
                            hash,
                            entries,
                            totals,
                        },
                    );
                }
            }
        }
        Fingerprints { by_address }
    }

    /// The sub-tree of a container at `depth` when it is worth listing once only.
    pub fn shared(&self, value: &Value, depth: usize) -> Option<&Subtree> {
        self.by_address
            .get(&(value as *const Value))
            .filter(|info| {
                info.entries >= 2 && info.entries.saturating_mul(depth + 1) >= SHARED_MIN_STEPS
            })
    }
}

fn hash_step(step: &Step<'_>, hasher: &mut impl Hasher) {
    match step {
        Step::Key(key) => (0u8, key).hash(hasher),
        Step::Index(i) => (1u8, i).hash(hasher),
        Step::Attr(name) => (2u8, name).hash(hasher),
        Step::Arg(i) => (3u8, i).hash(hasher),
        Step::State => 4u8.hash(hasher),
    }
}

/// The hash of a leaf as it is listed: a tensor by its storage and view, a hashable value
/// by its whole content, anything else by its type and repr.
fn leaf_hash(state: &RandomState, value: &Value) -> u64 {
    let mut hasher = state.build_hasher();
    value.type_name().hash(&mut hasher);
    if let Some(tensor) = value.as_tensor() {
        (
            tensor.storage().id(),
            tensor.storage_offset(),
            tensor.shape(),
            tensor.strides(),
            tensor.dtype().name(),
            tensor.requires_grad(),
        )
            .hash(&mut hasher);
    } else if let Ok(key) = Key::from_value(value) {
        key.hash(&mut hasher);
    } else {
        repr(value).hash(&mut hasher);
    }
    hasher.finish()
}
