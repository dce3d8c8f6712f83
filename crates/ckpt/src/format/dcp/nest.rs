//! Restoring DCP's flattened entries to the nested state they came from, as torch's
//! `set_element` does for `dcp.load` and `dcp_to_torch_save`: each entry's path (from the
//! planner data) is walked from the root, making a dict before a string step and a list
//! before an index step (lists grown with `None`).

use crate::error::{Error, Result};
use crate::format::dcp::metadata::PathPart;
use crate::value::{Dict, Key, Value};

/// Sets `value` at `path` under `root` (a dict). `max_index` bounds list indices (a list
/// cannot usefully be longer than the checkpoint has entries).
pub(crate) fn set_element(
    root: &mut Dict,
    path: &[PathPart],
    value: Value,
    max_index: usize,
) -> Result<()> {
    let Some((first, rest)) = path.split_first() else {
        return Err(Error::format("an empty path"));
    };
    let PathPart::Key(first) = first else {
        return Err(Error::format("a path that starts with an index"));
    };
    let Some((last, middle)) = rest.split_last() else {
        root.insert(first.as_str(), value);
        return Ok(());
    };
    let mut current = root
        .items
        .entry(Key::Str(first.clone()))
        .or_insert_with(|| empty_for(&rest[0]));
    for (i, step) in middle.iter().enumerate() {
        let next = &rest[i + 1];
        current = child(current, step, empty_for(next), max_index)?;
    }
    *child(current, last, Value::None, max_index)? = value;
    Ok(())
}

/// The container a step needs: a dict before a key, a list before an index.
fn empty_for(step: &PathPart) -> Value {
    match step {
        PathPart::Key(_) => Value::Dict(Dict::new()),
        PathPart::Index(_) => Value::List(Vec::new()),
    }
}

/// The child `step` of `container`, made as `default` if absent (or `None` in a list).
fn child<'a>(
    container: &'a mut Value,
    step: &PathPart,
    default: Value,
    max_index: usize,
) -> Result<&'a mut Value> {
    match (container, step) {
        (Value::Dict(dict), PathPart::Key(key)) => {
            Ok(dict.items.entry(Key::Str(key.clone())).or_insert(default))
        }
        (Value::Dict(dict), PathPart::Index(i)) => {
            Ok(dict.items.entry(Key::Int(*i as i64)).or_insert(default))
        }
        (Value::List(list), PathPart::Index(i)) => {
            if *i > max_index {
                return Err(Error::format(format!(
                    "a list index {i} in a checkpoint of {max_index} entries"
                )));
            }
            if list.len() <= *i {
                list.resize(*i + 1, Value::None);
            }
            let slot = &mut list[*i];
            if matches!(slot, Value::None) {
                *slot = default;
            }
            Ok(slot)
        }
        (other, step) => Err(Error::format(format!(
            "two entries' paths disagree: a {} where the step {step:?} needs a container",
            other.type_name()
        ))),
    }
}
