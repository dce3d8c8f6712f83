//! The benchmark's quick mode runs end to end: every workload, every contender (Python's
//! too, when Python with torch is there; required under `CI=true`), a Markdown report with
//! the machine's limits and the performance targets, and a summary in a README.

use std::process::Command;

#[allow(dead_code)] // shared with the other crates' tests, which use all of it
#[path = "../../../tests/support/python.rs"]
mod python;

#[test]
fn quick_benchmark_runs_every_workload_and_reports_limits_and_targets() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("RESULTS.md");
    let readme = dir.path().join("README.md");
    let start = "<!-- bench:start (written by scripts/bench.sh --readme README.md) -->";
    let end = "<!-- bench:end -->";
    std::fs::write(&readme, format!("# Title\n\n{start}\nold\n{end}\n\nrest\n")).unwrap();
    let python = python::interop_python(
        "the Python contenders of the benchmark",
        "torch, safetensors, fvcore.common.checkpoint",
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_ckpt-bench"));
    command
        .args(["run", "--quick", "--dir"])
        .arg(dir.path().join("data"))
        .arg("--results")
        .arg(&results)
        .arg("--readme")
        .arg(&readme);
    match &python {
        Some(path) => command.arg("--require-python").arg("--python").arg(path),
        None => command.arg("--no-python"),
    };
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ckpt-bench failed:\n{stderr}");

    let report = std::fs::read_to_string(&results).unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.starts_with(printed.trim()),
        "the file is not the printed report:\n{report}"
    );
    // Below the report, a marker after which notes written by hand survive the next run.
    assert!(report.trim_end().ends_with("-->"), "{report}");
    for heading in [
        "## big:",
        "## many small:",
        "## detectron2-style training checkpoint",
        "## name matching",
        "## Targets",
    ] {
        assert!(report.contains(heading), "no '{heading}' in:\n{report}");
    }
    let mut rows = vec![
        "ckpt `write_torch`",
        "ckpt `save_torch` (atomic, fsync)",
        "ckpt `load_with(mmap: false)`",
        "ckpt `load_with(mmap: true)`",
        "safetensors crate `serialize_to_file`",
        "limit: `dd` to the same directory",
        "limit: `dd` to tmpfs",
        "limit: `dd conv=fsync`",
        "limit: memcpy",
        "ckpt `Checkpointer::save`",
        "ckpt: the checkpoint dict by `write_torch`",
        "ckpt `Checkpointer::resume_or_load`",
        "ckpt `align_and_update_state_dicts`",
        "convert → torch file, durable, tmpfs",
        "convert → safetensors, durable, same directory",
        "ckpt convert",
        "limit: `cp` of the file + fsync",
    ];
    if python.is_some() {
        rows.extend([
            "`torch.save(state, path)`",
            "`torch.load(weights_only=True)`",
            "`torch.load(weights_only=True, mmap=True)`",
            "safetensors `save_file`",
            "safetensors `load_file`",
            "fvcore `Checkpointer.save`",
            "fvcore `Checkpointer.resume_or_load`",
            "detectron2's quadratic rule (Python)",
            "`torch.load(weights_only=True)` + `torch.save` + fsync",
            "`torch.load(weights_only=True)` + safetensors `save_file` + fsync",
        ]);
    }
    for row in rows {
        assert!(report.contains(row), "no row '{row}' in:\n{report}");
    }
    // Every timed row has a finite median.
    assert!(!report.contains("| NaN"), "{report}");
    // Saves and loads left nothing behind but the inputs.
    assert!(!dir.path().join("data").join("out").exists());

    // The README gets a summary between its markers, not the full tables.
    let readme = std::fs::read_to_string(&readme).unwrap();
    assert!(
        readme.starts_with(&format!("# Title\n\n{start}\nMeasured by `"))
            && readme.ends_with(&format!("{end}\n\nrest\n")),
        "{readme}"
    );
    let summary_rows = [
        "| save: ",
        "| save + fsync: ",
        "| load into memory: ",
        "| load memory-mapped: ",
        "| resume model + optimizer: detectron2 R50-FPN training checkpoint |",
        "| match names: ",
    ];
    for row in summary_rows {
        assert!(readme.contains(row), "no summary row '{row}' in:\n{readme}");
    }
    for full_table_only in ["min – max", "added RSS", "Targets", "met:"] {
        assert!(
            !readme.contains(full_table_only),
            "'{full_table_only}' in the README summary:\n{readme}"
        );
    }
    let tmpfs = format!(
        "/dev/shm/ckpt-bench-convert{}",
        dir.path().join("data").to_string_lossy().replace('/', "_")
    );
    assert!(
        !std::path::Path::new(&tmpfs).exists(),
        "{tmpfs} left behind"
    );
}
