//! Reads a checkpoint (any path ckpt accepts: a file, a Hugging Face sharded directory, a DCP
//! directory) into memory, every tensor's bytes, and prints how many tensors and bytes: what
//! `scripts/bench-sharded.sh` times against safetensors' own loading of the same shards.
//!
//! ```sh
//! cargo run --release -p ckpt --example read_all -- model_dir/
//! ```

use ckpt::format::{load_with, LoadOptions};
use ckpt::walk::leaves;

fn main() -> Result<(), ckpt::Error> {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: read_all CHECKPOINT");
        std::process::exit(2);
    };
    // Eager: the bytes are read into memory, as safetensors' load_file reads them.
    let loaded = load_with(&path, &LoadOptions::default().with_mmap(false))?;
    let (mut tensors, mut bytes) = (0usize, 0usize);
    for leaf in leaves(&loaded.value) {
        if let Some(tensor) = leaf.value.as_tensor() {
            tensors += 1;
            bytes += tensor.nbytes();
        }
    }
    println!(
        "{} ({}): {tensors} tensors, {bytes} bytes",
        path.to_string_lossy(),
        loaded.format
    );
    Ok(())
}
