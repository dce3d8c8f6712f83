//! The integration tests of ckpt, in one test binary (one module per topic; what they share
//! is in `support`). Child processes come from the `ckpt-test-child` binary (`tests/bin`).
//!
//! The live PyTorch interop tests need `$CKPT_PYTHON` (see `scripts/setup-python.sh`).

mod support;

mod async_save;
mod best_checkpointer;
mod broadcast_views;
mod cast_matches_torch;
mod checkpointer_interop_fvcore;
mod checkpointer_save_load;
mod checkpointer_train_resume;
mod convert_streaming;
mod crash_safety;
mod deep_values;
mod detection_caffe2;
mod detection_kinds;
mod detection_multi_rank;
mod detection_reference;
mod dist_in_process;
mod empty_tensors;
mod fuzz_fixtures;
mod load_copies_once;
mod load_keeps_dtypes;
mod load_owns_memory;
mod matching_align;
mod matching_c2_names;
mod matching_logs;
mod matching_property;
#[cfg(feature = "s3")]
mod object_store_partial;
#[cfg(feature = "s3")]
mod object_store_s3;
mod periodic_retention;
mod read_archives;
mod read_fixtures;
mod read_header_paths;
mod read_hostile;
mod read_pickle;
mod resolve_env;
mod resolve_http;
mod resolve_paths;
mod resume_integrity;
mod retention_policies;
mod save_long_names;
mod serde_value;
mod sharded_dcp;
mod sharded_hf;
mod shared_save_dir;
mod write_many_tensors;
mod write_reference_bytes;
mod write_safetensors;
mod write_torch_loads_in_torch;
mod write_torch_streaming;
mod writer_lock;
