//! User errors: one line on stderr naming the file, exit code 1, never a panic.

use crate::support::{ckpt, fixture, one_line_error, success};

#[test]
fn missing_input_file_is_one_line_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pth");
    for args in [
        vec!["inspect".to_string(), missing.display().to_string()],
        vec![
            "convert".to_string(),
            missing.display().to_string(),
            dir.path().join("out.pth").display().to_string(),
        ],
    ] {
        let line = one_line_error(&ckpt(&args));
        assert!(line.contains("nope.pth"), "{line}");
        assert!(line.contains("No such file"), "{line}");
    }
}

#[test]
fn file_that_is_no_checkpoint_is_rejected_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("model.pth");
    std::fs::write(&garbage, b"hello, not a checkpoint").unwrap();
    let line = one_line_error(&ckpt(&["inspect".as_ref(), garbage.as_os_str()]));
    assert!(line.contains("model.pth"), "{line}");
    assert!(line.contains("not a checkpoint"), "{line}");

    let empty = dir.path().join("empty.pth");
    std::fs::write(&empty, b"").unwrap();
    let line = one_line_error(&ckpt(&["inspect".as_ref(), empty.as_os_str()]));
    assert!(
        line.contains("empty.pth") && line.contains("empty file"),
        "{line}"
    );
}

#[test]
fn unknown_output_extension_lists_the_known_ones_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.onnx");
    let line = one_line_error(&ckpt(&[
        "convert".as_ref(),
        fixture("train_state.pth").as_os_str(),
        out.as_os_str(),
    ]));
    assert!(
        line.contains("model.onnx") && line.contains("'.onnx'"),
        "{line}"
    );
    for known in [".pth", ".pt", ".pyth", ".bin", ".safetensors"] {
        assert!(line.contains(known), "{line}");
    }
    assert!(!out.exists());
}

#[test]
fn missing_directory_for_ls_is_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("output");
    let line = one_line_error(&ckpt(&["ls".as_ref(), missing.as_os_str()]));
    assert!(line.contains("output"), "{line}");
}

#[test]
fn bad_arguments_are_one_line_errors() {
    one_line_error(&ckpt(&["frobnicate"]));
    one_line_error(&ckpt(&["inspect", "--no-such-flag", "x.pth"]));
    one_line_error(&ckpt(&["convert", "only-one-arg.pth"]));
}

#[test]
fn every_command_has_help() {
    let top = success(&ckpt(&["--help"]));
    for command in ["inspect", "convert", "ls"] {
        assert!(top.contains(command), "{top}");
        let help = success(&ckpt(&[command, "--help"]));
        assert!(help.contains(&format!("Usage: ckpt {command}")), "{help}");
    }
    let convert = success(&ckpt(&["convert", "--help"]));
    assert!(convert.contains("--tensors-only") && convert.contains("--key"));
}
