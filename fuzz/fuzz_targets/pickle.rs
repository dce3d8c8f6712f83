//! The pickle machine on its own: any bytes read as one pickle, persistent ids resolved to
//! zero-filled storages of the size they name (within a bound), with both ways of decoding
//! Python 2 strings; and the same bytes as a plain pickle file.
#![no_main]

use ckpt::format::{detect, Format, LoadOptions};
use ckpt::pickle::{
    read_pickle, PersistentLoad, PersistentStorageId, PickleOptions, Py2Strings, TypedStorage,
};
use ckpt::{DType, Error, Storage, Value};
use ckpt_fuzz::budget::READ;
use ckpt_fuzz::exercise::{load_and_use, use_value};
use libfuzzer_sys::fuzz_target;

/// Storages of the size their id names, up to `max_bytes` in all.
struct ZeroStorages {
    max_bytes: usize,
}

impl ZeroStorages {
    fn storage(&mut self, dtype: DType, numel: i64) -> ckpt::Result<TypedStorage> {
        let bytes = usize::try_from(numel)
            .ok()
            .and_then(|n| n.checked_mul(dtype.size()))
            .filter(|&n| n <= self.max_bytes)
            .ok_or_else(|| Error::invalid(format!("storage of {numel} elements")))?;
        self.max_bytes -= bytes;
        Ok(TypedStorage {
            storage: Storage::from_vec(vec![0; bytes]),
            dtype,
        })
    }
}

impl PersistentLoad for ZeroStorages {
    fn persistent_load(&mut self, pid: &Value) -> ckpt::Result<TypedStorage> {
        match pid {
            Value::Tuple(items) => match items.get(4) {
                Some(Value::Int(numel)) => self.storage(DType::Float32, *numel),
                _ => Err(Error::invalid("persistent id without a size")),
            },
            _ => Err(Error::invalid("persistent id that is not a tuple")),
        }
    }

    fn torch_storage(&mut self, id: &PersistentStorageId<'_>) -> ckpt::Result<TypedStorage> {
        let dtype = DType::from_storage_class(id.class_name).unwrap_or(DType::UInt8);
        self.storage(dtype, id.numel)
    }
}

fuzz_target!(|data: &[u8]| {
    for strings in [Py2Strings::Latin1, Py2Strings::Utf8OrLatin1] {
        let options = PickleOptions::default().with_py2_strings(strings);
        let mut storages = ZeroStorages {
            max_bytes: 4 * data.len() + 4096,
        };
        let (read, _) = READ.run(data.len(), || read_pickle(data, 0, &options, &mut storages));
        if let Ok((value, _)) = read {
            use_value(&value, data.len());
        }
    }
    if matches!(detect(data), Ok(Format::Pickle)) {
        load_and_use(data, &LoadOptions::default().with_mmap(false));
    }
});
