//! Copying the tensors of a value out of the buffer of the file they were read from into
//! allocations of their own: a view of a memory map depends on the file (see
//! [`Storage`](crate::Storage#a-map-depends-on-its-file)), and a view of a whole file read into
//! memory keeps all of that memory alive, however small the view.
//!
//! The checkpointers detach what they hand to checkpointables and what they return; a
//! [`crate::Model`] copies what it keeps itself.

use std::collections::HashMap;

use crate::error::Result;
use crate::parallel::map_weighted;
use crate::tensor::{Storage, Tensor};
use crate::value::Value;

impl Value {
    /// Copies every tensor of this value that is a view of a file's buffer (a memory map, or
    /// a whole file read into memory) into an allocation of its own. Storages shared by
    /// several tensors stay shared (one copy each); tensors that already own their bytes are
    /// left as they are. Large amounts are copied on a few threads.
    ///
    /// An error (the memory for a copy cannot be had) may leave some tensors copied and
    /// others not; each is valid either way.
    ///
    /// ```no_run
    /// let mut value = ckpt::format::load("model_final.pth")?; // views of a map of the file
    /// value.detach()?; // owned: the file may now change or disappear
    /// # Ok::<(), ckpt::Error>(())
    /// ```
    pub fn detach(&mut self) -> Result<()> {
        detach_values([self])
    }
}

/// [`Value::detach`] of several values at once (storages shared between them stay shared).
pub(crate) fn detach_values<'a>(values: impl IntoIterator<Item = &'a mut Value>) -> Result<()> {
    let mut tensors = Vec::new();
    for value in values {
        collect_tensors(value, &mut tensors);
    }
    detach_tensors(tensors)
}

/// Copies the storages of `tensors` that are views of a file's buffer, each storage once.
pub(crate) fn detach_tensors(mut tensors: Vec<&mut Tensor>) -> Result<()> {
    tensors.retain(|t| !t.storage().owns_its_bytes());
    if tensors.is_empty() {
        return Ok(());
    }
    let (unique, seen) = unique_storages(&tensors);
    let owned = map_weighted(unique, Storage::len, Storage::try_into_owned)
        .into_iter()
        .collect::<Result<Vec<Storage>>>()?;
    for t in tensors {
        if let Some(&i) = seen.get(&t.storage().id()) {
            t.replace_storage(owned[i].clone());
        }
    }
    Ok(())
}

/// The storages of `tensors`, each once (in the order first met), and the index in that list
/// of each storage id: a storage shared by several tensors is copied once and stays shared.
pub(crate) fn unique_storages(tensors: &[&mut Tensor]) -> (Vec<Storage>, HashMap<usize, usize>) {
    let mut unique: Vec<Storage> = Vec::new();
    let mut index_of: HashMap<usize, usize> = HashMap::new();
    for t in tensors {
        index_of.entry(t.storage().id()).or_insert_with(|| {
            unique.push(t.storage().clone());
            unique.len() - 1
        });
    }
    (unique, index_of)
}

/// Pushes every tensor inside `root` (without recursion: values nest arbitrarily deep).
pub(crate) fn collect_tensors<'a>(root: &'a mut Value, out: &mut Vec<&'a mut Tensor>) {
    let mut stack = vec![root];
    while let Some(value) = stack.pop() {
        match value {
            Value::Tensor(t) | Value::Parameter(t) | Value::NdArray(t) => out.push(t),
            Value::List(items)
            | Value::Tuple(items)
            | Value::Set(items)
            | Value::FrozenSet(items) => stack.extend(items.iter_mut()),
            Value::Dict(dict) => {
                stack.extend(dict.items.values_mut());
                stack.extend(dict.attributes.values_mut());
            }
            Value::Object(object) => {
                let object = &mut **object;
                match &mut object.build {
                    crate::value::ObjectBuild::Call(args)
                    | crate::value::ObjectBuild::New(args) => stack.extend(args.iter_mut()),
                    crate::value::ObjectBuild::Global => {}
                }
                stack.extend(object.state.iter_mut());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Buffer;
    use crate::value::Dict;
    use std::sync::Arc;

    #[test]
    fn owned_tensors_are_left_alone_and_deep_values_do_not_overflow() {
        let t = Tensor::from_slice(&[1f32, 2.0], &[2]).unwrap();
        let mut v = Value::Tensor(t.clone());
        for _ in 0..100_000 {
            v = Value::List(vec![v]);
        }
        v.detach().unwrap();
        std::mem::forget(v);

        let mut d = Dict::new();
        d.insert("t", Value::Tensor(t.clone()));
        let mut v = Value::Dict(d);
        v.detach().unwrap();
        let kept = v.get("t").and_then(Value::as_tensor).unwrap();
        assert!(kept.storage().same_as(t.storage()));
    }

    #[test]
    fn views_of_a_whole_file_in_memory_are_copied_out_of_it() {
        let buffer = Arc::new(Buffer::Heap(vec![3u8; 1 << 16]));
        let storage = Storage::slice(buffer.clone(), 8, 4).unwrap();
        let t = Tensor::new(crate::DType::UInt8, vec![4], vec![1], 0, storage).unwrap();
        let mut v = Value::Tensor(t);
        v.detach().unwrap();
        assert!(v.as_tensor().unwrap().storage().owns_its_bytes());
        assert_eq!(Arc::strong_count(&buffer), 1);
    }

    #[test]
    fn mapped_storages_are_copied_once_and_stay_shared() {
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &[7u8; 64]).unwrap();
        let buffer = Arc::new(Buffer::map(&file).unwrap());
        let storage = Storage::slice(buffer, 0, 64).unwrap();
        let a = Tensor::new(crate::DType::UInt8, vec![64], vec![1], 0, storage.clone()).unwrap();
        let b = a.view(&[8], &[1], 8).unwrap();
        let mut v = Value::List(vec![Value::Tensor(a), Value::NdArray(b)]);
        v.detach().unwrap();
        let Value::List(items) = &v else { panic!() };
        let a = items[0].as_tensor().unwrap();
        let b = items[1].as_tensor().unwrap();
        assert!(!a.storage().is_mapped());
        assert!(a.storage().same_as(b.storage()));
        assert_eq!(b.storage_offset(), 8);
        assert_eq!(b.to_vec::<u8>().unwrap(), vec![7; 8]);
    }
}
