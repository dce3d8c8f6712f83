//! A save directory shared by processes of several hosts (NFS, a volume mounted in several
//! containers): a temporary file another host is writing must survive a save here, although
//! its writer's pid does not exist on this host.

use ckpt::store::TEMP_PREFIX;
use ckpt::{Checkpointer, Dict};

use crate::support::model;

#[cfg(target_os = "linux")]
#[test]
fn a_temporary_another_host_is_writing_survives_a_save() {
    let dir = tempfile::tempdir().unwrap();
    // Written just now by pid 4294967295 of another host: no such pid exists here.
    let in_flight = dir.path().join(format!(
        "{TEMP_PREFIX}4294967295@other.host-1-model_0000009.pth"
    ));
    std::fs::write(&in_flight, b"PK\x03\x04 being written").unwrap();

    let checkpointer = Checkpointer::new(model(1.0), dir.path());
    checkpointer.save("model_0000019", Dict::new()).unwrap();
    assert!(
        in_flight.exists(),
        "another host's save in progress was deleted"
    );
}
