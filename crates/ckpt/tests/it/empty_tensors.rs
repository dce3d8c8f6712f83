//! Empty tensors whose storage offset lies past their storage (torch accepts any offset for
//! a tensor without elements): every operation on them works and none panics.

use ckpt::format::{load_bytes, write_safetensors, write_torch, LoadOptions, SaveOptions};
use ckpt::{StateDict, Value};

use crate::support::archive::{tensor_dict_pickle, torch_zip, Entry};

fn empty_tensor_at(offset: i64) -> Value {
    let pickle = tensor_dict_pickle(&[Entry {
        name: "w",
        key: "0",
        numel: 0,
        offset,
        shape: &[0, 3],
        stride: &[3, 1],
    }]);
    let bytes = torch_zip(pickle, vec![("0".into(), Vec::new())]);
    load_bytes(bytes, &LoadOptions::default()).unwrap().value
}

#[test]
fn empty_tensor_with_an_offset_past_its_storage_is_written_and_compared() {
    for offset in [5, i64::MAX / 4] {
        let value = empty_tensor_at(offset);
        let tensor = value.get("w").unwrap().as_tensor().unwrap();
        assert_eq!(tensor.shape(), &[0, 3]);
        assert!(tensor.contiguous_bytes().is_empty());
        assert!(tensor.data_eq(tensor));
        assert!(tensor.to_vec::<f32>().unwrap().is_empty());
        let owned = tensor.to_owned_contiguous();
        assert_eq!(owned.shape(), &[0, 3]);

        let options = SaveOptions::default().with_archive_name("a");
        let mut written = Vec::new();
        write_torch(&mut written, &value, &options).unwrap();
        let back = load_bytes(written, &LoadOptions::default()).unwrap().value;
        assert_eq!(back.get("w").unwrap().as_tensor().unwrap().shape(), &[0, 3]);

        let sd = StateDict::from_value(&value).unwrap();
        let mut st = Vec::new();
        write_safetensors(&mut st, &sd, None).unwrap();
        let back = load_bytes(st, &LoadOptions::default()).unwrap().value;
        assert_eq!(back.get("w").unwrap().as_tensor().unwrap().shape(), &[0, 3]);
    }
}
