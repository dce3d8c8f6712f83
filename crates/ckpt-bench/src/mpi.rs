//! The `mpi` workload: the big checkpoint (1 GiB in 320 tensors) resumed on the 4 ranks of an
//! `mpirun` job with the file on rank 0 only, against MPI's own broadcast of as many bytes
//! (the limit) and against every rank reading the file itself. Each row is one `mpirun -np 4`
//! of ckpt-mpi's `resume_bench` example (built beside this program by `scripts/bench.sh`);
//! every rank reports its time and peak memory.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::driver::{Case, Kind, Outcome, Runner};
use crate::measure::{median, Sample};
use crate::report::{bytes, time};

type BoxError = Box<dyn std::error::Error>;

/// Ranks of the job.
pub const RANKS: usize = 4;

/// What one rank of a job measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RankSample {
    pub rank: usize,
    pub seconds: f64,
    pub rss_before: u64,
    pub peak_rss: u64,
    pub peak_reset: bool,
}

impl RankSample {
    fn added(&self) -> u64 {
        self.peak_rss.saturating_sub(self.rss_before)
    }
}

/// The `resume_bench` program beside `exe` (`target/release/examples/`), when it is there and
/// `mpirun` is on the PATH.
pub fn program(exe: &Path) -> Option<PathBuf> {
    let program = exe.parent()?.join("examples").join("resume_bench");
    let mpirun = Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    (mpirun && program.exists()).then_some(program)
}

/// The rows: `bytes` is the file's size.
pub fn cases(bytes: u64) -> Vec<Case> {
    let rows = [
        (
            "ckpt",
            "ckpt-mpi: `resume_or_load`, file on rank 0 only (streamed to ranks 1–3, parsed, loaded into the model)",
            "ckpt-rank0",
        ),
        (
            "ckpt-stream",
            "ckpt-mpi: the transfer alone (`broadcast_slice` from rank 0's file map, 64 MiB pieces)",
            "ckpt-stream",
        ),
        (
            "ckpt-all",
            "ckpt: `resume_or_load`, every rank reads its own copy (page cache)",
            "ckpt-all",
        ),
        (
            "raw-bcast",
            "limit: `MPI_Bcast` of as many bytes, memory to memory",
            "raw-bcast",
        ),
    ];
    rows.into_iter()
        .map(|(id, label, mode)| {
            let mut case = Case::new("mpi", Kind::ResumeRanks, id, label, Runner::Mpi(mode));
            case.bytes = bytes;
            case.limit = id == "raw-bcast";
            case
        })
        .collect()
}

/// Runs one row: `mpirun -np 4 resume_bench MODE big-resume out/`. The sample's time is the
/// slowest rank's (every rank times the same two barriers); its memory is rank 0's, and
/// every rank's is in `ranks`.
pub fn run(program: &Path, mode: &str, dir: &Path) -> Result<Sample, BoxError> {
    let scratch = dir.join("out").join("mpi");
    std::fs::create_dir_all(&scratch)?;
    let output = Command::new("mpirun")
        .args(["--oversubscribe", "-np", &RANKS.to_string()])
        .arg(program)
        .arg(mode)
        .arg(dir.join("big-resume"))
        .arg(&scratch)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RUST_LOG", "error")
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("mpirun resume_bench {mode} failed ({})", output.status).into());
    }
    let mut ranks: Vec<RankSample> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ranks.sort_by_key(|r| r.rank);
    if ranks.len() != RANKS {
        return Err(format!("resume_bench {mode}: {} ranks reported", ranks.len()).into());
    }
    let first = &ranks[0];
    Ok(Sample {
        seconds: ranks.iter().map(|r| r.seconds).fold(0.0, f64::max),
        rss_before: first.rss_before,
        peak_rss: first.peak_rss,
        peak_reset: ranks.iter().all(|r| r.peak_reset),
        ranks,
        ..Sample::default()
    })
}

fn seconds(case: &Case) -> f64 {
    median(&case.samples.iter().map(|s| s.seconds).collect::<Vec<_>>())
}

/// The median over runs of each rank's added peak RSS, then the largest over `ranks`.
fn added(case: &Case, ranks: std::ops::Range<usize>) -> Option<u64> {
    ranks
        .filter_map(|rank| {
            let values: Vec<f64> = case
                .samples
                .iter()
                .filter_map(|s| s.ranks.get(rank))
                .map(|r| r.added() as f64)
                .collect();
            (!values.is_empty()).then(|| median(&values) as u64)
        })
        .max()
}

fn find<'a>(outcome: &'a Outcome, id: &str) -> Option<&'a Case> {
    outcome
        .cases
        .iter()
        .find(|c| c.workload == "mpi" && c.id == id && !c.samples.is_empty())
}

/// The table of the `mpi` workload.
pub fn table(out: &mut String, outcome: &Outcome, rows: &[&Case]) {
    use std::fmt::Write;
    let limit = find(outcome, "raw-bcast").map(seconds);
    let _ = writeln!(
        out,
        "| contender | median | min – max | GiB/s | × raw broadcast | added peak RSS, rank 0 | added peak RSS, ranks 1–3 (largest) | RSS before (rank 1) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for case in rows {
        let t = seconds(case);
        let times = case.samples.iter().map(|s| s.seconds);
        let min = times.clone().fold(f64::INFINITY, f64::min);
        let max = times.fold(0.0, f64::max);
        let spread = if case.samples.len() < 2 {
            "—".to_string()
        } else {
            format!("{} – {}", time(min), time(max))
        };
        let before: Vec<f64> = case
            .samples
            .iter()
            .filter_map(|s| s.ranks.get(1))
            .map(|r| r.rss_before as f64)
            .collect();
        let name = if case.id == "ckpt" {
            format!("**{}**", case.label)
        } else {
            case.label.clone()
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {spread} | {:.2} | {} | {} | {} | {} |",
            time(t),
            case.bytes as f64 / (1u64 << 30) as f64 / t,
            limit.map_or("—".into(), |l| format!("{:.2}", t / l)),
            added(case, 0..1).map_or("—".into(), bytes),
            added(case, 1..RANKS).map_or("—".into(), bytes),
            if before.is_empty() {
                "—".into()
            } else {
                bytes(median(&before) as u64)
            },
        );
    }
    let _ = writeln!(
        out,
        "\nEvery rank builds its model (the checkpoint's names and shapes, every byte written) \
         before the timer, so \"RSS before\" holds the model and the added peak is what resuming \
         needed beyond it. The time runs from a barrier before the operation to a barrier after \
         it, on the slowest rank. {RANKS} ranks share this machine's cores (`mpirun \
         --oversubscribe`), so the broadcasts run at shared-memory speed under contention.\n"
    );
}

/// The targets the `mpi` rows decide.
pub fn targets(outcome: &Outcome) -> Vec<String> {
    let check =
        |pass: bool, text: String| format!("- {} {text}", if pass { "met:" } else { "not met:" });
    let mut lines = Vec::new();
    let Some(raw) = find(outcome, "raw-bcast") else {
        return lines;
    };
    for (id, what) in [
        ("ckpt", "resume on 4 ranks, file on rank 0 only"),
        ("ckpt-stream", "its transfer alone"),
    ] {
        if let Some(case) = find(outcome, id) {
            let over = seconds(case) / seconds(raw) - 1.0;
            lines.push(check(
                over <= 0.10,
                format!(
                    "{what} within 10% of MPI's raw broadcast: {:+.0}%",
                    over * 100.0
                ),
            ));
        }
    }
    if let Some(case) = find(outcome, "ckpt") {
        let bound = case.bytes + (64 << 20);
        if let Some(most) = added(case, 0..RANKS) {
            lines.push(check(
                most <= bound,
                format!(
                    "resume on 4 ranks: every rank's added peak ≤ the state's size + 64 MiB ({}): largest {}",
                    bytes(bound),
                    bytes(most)
                ),
            ));
        }
    }
    lines
}
