//! A checkpoint name the filesystem accepts can be saved: the temporary file of an atomic
//! save must not need a longer name than the checkpoint itself (most filesystems allow 255
//! bytes per name, and a non-ASCII character takes several bytes).

use ckpt::{Checkpointer, Dict};

use crate::support::model;

#[test]
fn a_unicode_name_near_the_filesystem_limit_saves_and_is_tagged() {
    let dir = tempfile::tempdir().unwrap();
    // 80 three-byte characters: 244 bytes with `.pth`, within the 255-byte limit.
    let name = "模".repeat(80);
    let basename = format!("{name}.pth");
    assert!(basename.len() <= 255);
    std::fs::write(
        dir.path().join(&basename),
        b"the filesystem takes this name",
    )
    .unwrap();

    let checkpointer = Checkpointer::new(model(1.0), dir.path());
    checkpointer.save(&name, Dict::new()).unwrap();
    assert_eq!(
        checkpointer.get_checkpoint_file().unwrap(),
        Some(dir.path().join(&basename))
    );
    assert!(ckpt::format::load(dir.path().join(&basename)).is_ok());
}
