//! The results as Markdown: one table per workload (medians, GiB/s, time relative to ckpt,
//! memory), the machine's limits in the same tables, and the performance targets checked
//! ([`render`], for `bench/RESULTS.md`); and a one-line-per-operation summary of how much
//! faster or slower ckpt is than torch and safetensors ([`render_summary`], for the README).

use std::fmt::Write;
use std::process::Command;

use crate::driver::{Case, Kind, Outcome};
use crate::measure::median;

const GIB: f64 = (1u64 << 30) as f64;

/// Renders the whole report; `command` is the command line that produced it.
pub fn render(outcome: &Outcome, command: &str) -> String {
    let mut out = String::new();
    let mode = if outcome.spec.quick {
        "quick (small sizes, smoke test)"
    } else {
        "full"
    };
    let _ = writeln!(out, "# ckpt benchmark\n");
    let _ = writeln!(out, "- Command: `{command}`");
    let _ = writeln!(out, "- Date: {}", now_utc());
    let _ = writeln!(
        out,
        "- Mode: {mode}; {} repetitions per row, medians; run took {:.1} min",
        outcome.reps,
        outcome.seconds / 60.0
    );
    let _ = writeln!(out, "- Machine: {}", machine());
    let _ = writeln!(
        out,
        "- Contenders: ckpt {} ({} build), {}, safetensors crate 0.6 (Rust)",
        env!("CARGO_PKG_VERSION"),
        if cfg!(debug_assertions) {
            "DEBUG"
        } else {
            "release"
        },
        match &outcome.torch_version {
            Some(v) => format!("torch {v} + safetensors + fvcore (Python)"),
            None => "no Python contenders (Python with torch not found)".to_string(),
        }
    );
    let _ = writeln!(
        out,
        "\nHow it is measured: every measurement is a process of its own (Python: forked from \
         a server that has imported torch, so the import is never timed); `sync` before each; \
         rows of one workload alternate, in a new order each repetition, and every output is deleted after its run. Saves: the target \
         is deleted first; the state is built before the timer. Loads: the file is hot in the \
         page cache for every contender (read once right before the run), and the time \
         includes touching every tensor byte (summing it); \"open only\" is the load call \
         before any byte is touched. GiB/s = tensor bytes / median time. \"× ckpt\" = median \
         time / ckpt's median for the same operation (above 1: slower than ckpt). \"added \
         RSS\" = peak RSS during the operation minus the RSS right before it (that baseline, \
         \"RSS before\", holds the interpreter, torch and, for saves, the state itself). \
         Limits (`dd`, memcpy) are the machine's own, measured in the same run at the same size. \
         Conversions (\"convert →\" rows) read the workload's torch file and write a new file \
         durably; `ckpt convert` runs as its own process and its \"added RSS\" is that whole \
         process's peak (`ru_maxrss`); their limit is `cp` of the same file to the same place \
         plus fsync.\n"
    );

    for workload in ["big", "small", "detectron", "matching", "mpi"] {
        let rows: Vec<&Case> = outcome
            .cases
            .iter()
            .filter(|c| c.workload == workload)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "## {}\n", workload_title(workload, outcome));
        if workload == "matching" {
            matching_table(&mut out, outcome, &rows);
        } else if workload == "mpi" {
            crate::mpi::table(&mut out, outcome, &rows);
        } else {
            table(&mut out, outcome, &rows);
        }
    }
    let _ = writeln!(out, "## Targets\n");
    for line in targets(outcome) {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// The line after which a results file holds notes written by hand, which
/// [`results_file`] keeps when a new run rewrites the file.
pub const NOTES_MARKER: &str =
    "<!-- bench:notes (what follows is kept when scripts/bench.sh --results rewrites this file) -->";

/// The content of a results file: `report`, then the notes marker and the notes of the
/// file's `previous` content (everything from its marker on), if any.
pub fn results_file(report: &str, previous: Option<&str>) -> String {
    let notes = previous
        .and_then(|old| old.find(NOTES_MARKER).map(|at| old[at..].trim_end()))
        .unwrap_or(NOTES_MARKER);
    format!("{}\n\n{notes}\n", report.trim_end())
}

/// The README's summary: one row per operation, ckpt's median time and how many times
/// faster or slower than ckpt each other contender is, with the run's command and machine.
pub fn render_summary(outcome: &Outcome, command: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Measured by `{command}` on {} ({}); medians of {}{}.\n",
        now_utc(),
        machine(),
        if outcome.reps == 1 {
            "1 run".to_string()
        } else {
            format!("{} runs", outcome.reps)
        },
        outcome
            .torch_version
            .as_ref()
            .map_or(String::new(), |v| format!(", torch {v}"))
    );
    let _ = writeln!(
        out,
        "| operation | ckpt | vs PyTorch (Python) | vs safetensors (Python) | vs safetensors (Rust crate) |"
    );
    let _ = writeln!(out, "|---|---:|---|---|---|");
    use Kind::*;
    let rows: [(&str, Kind, &str); 12] = [
        ("big", Save, "save"),
        ("big", SaveDurable, "save + fsync"),
        ("big", LoadEager, "load into memory"),
        ("big", LoadLazy, "load memory-mapped"),
        ("small", Save, "save"),
        ("small", SaveDurable, "save + fsync"),
        ("small", LoadEager, "load into memory"),
        ("small", LoadLazy, "load memory-mapped"),
        ("detectron", Save, "save"),
        ("detectron", Resume, "resume model + optimizer"),
        ("matching", Match, "match names"),
        ("big", Diff, "compare with its safetensors conversion"),
    ];
    for (workload, kind, what) in rows {
        let Some(ckpt) = find(outcome, workload, kind, "ckpt") else {
            continue;
        };
        let base = seconds(ckpt);
        let versus = |id: &str| find(outcome, workload, kind, id).map(|c| seconds(c) / base);
        let python = if workload == "matching" {
            extrapolated_python(outcome).map(|t| t / base)
        } else {
            versus("torch").or_else(|| versus("fvcore"))
        };
        let others = [python, versus("st-py"), versus("st-rs")];
        if others.iter().all(Option::is_none) {
            continue;
        }
        let [python, st_py, st_rs] = others.map(|r| r.map_or("—".to_string(), faster_or_slower));
        let _ = writeln!(
            out,
            "| {what}: {} | {} | {python} | {st_py} | {st_rs} |",
            workload_short(workload, outcome),
            time(base)
        );
    }
    let _ = writeln!(
        out,
        "\n\"2.0× faster\": the other takes twice ckpt's time; \"2.0× slower\": ckpt takes twice \
         the other's; within 5%: \"as fast\". PyTorch is `torch.save` / \
         `torch.load(weights_only=True)` (with `mmap=True` for memory-mapped loads), fvcore's \
         `Checkpointer` for the training checkpoint, and detectron2's name-matching rule (timed \
         on fewer names and extrapolated, as it is quadratic). Loads include touching every byte."
    );
    out
}

/// How a contender whose time is `ratio` × ckpt's compares, from ckpt's side.
fn faster_or_slower(ratio: f64) -> String {
    let times = |r: f64| {
        if r >= 10.0 {
            format!("{r:.0}×")
        } else {
            format!("{r:.1}×")
        }
    };
    if !ratio.is_finite() || ratio <= 0.0 {
        "—".into()
    } else if (ratio - 1.0).abs() < 0.05 {
        "as fast".into()
    } else if ratio > 1.0 {
        format!("{} faster", times(ratio))
    } else {
        format!("{} slower", times(1.0 / ratio))
    }
}

/// A workload in a few words, for the summary's rows.
fn workload_short(workload: &str, outcome: &Outcome) -> String {
    let spec = &outcome.spec;
    match workload {
        "big" => format!(
            "{} in {} tensors",
            bytes(crate::spec::total_bytes(&spec.big)),
            spec.big.len()
        ),
        "small" => format!(
            "{} tensors of {}",
            spec.small.len(),
            bytes(spec.small.first().map_or(0, |t| t.nbytes()))
        ),
        "detectron" => "detectron2 R50-FPN training checkpoint".to_string(),
        _ => format!(
            "{} model names to {} checkpoint names",
            spec.matching.keys, spec.matching.keys
        ),
    }
}

/// detectron2's quadratic matching time at the full number of keys, extrapolated from the
/// largest size it was timed at.
fn extrapolated_python(outcome: &Outcome) -> Option<f64> {
    let largest = outcome
        .cases
        .iter()
        .filter(|c| c.workload == "matching" && c.id == "python-n" && !c.samples.is_empty())
        .max_by_key(|c| c.arg)?;
    let ratio = outcome.spec.matching.keys as f64 / largest.arg as f64;
    Some(seconds(largest) * ratio.powi(2))
}

/// Start and end markers of the benchmark section of a README.
pub const README_START: &str =
    "<!-- bench:start (written by scripts/bench.sh --readme README.md) -->";
pub const README_END: &str = "<!-- bench:end -->";

/// `readme` with the text between [`README_START`] and [`README_END`] replaced by `summary`;
/// an error when the markers are missing.
pub fn splice_readme(readme: &str, summary: &str) -> Result<String, String> {
    let start = readme
        .find(README_START)
        .ok_or_else(|| format!("no line {README_START} in the README"))?;
    let after = start + README_START.len();
    let end = readme[after..]
        .find(README_END)
        .map(|e| after + e)
        .ok_or_else(|| format!("no line {README_END} after the start marker in the README"))?;
    Ok(format!(
        "{}\n{}\n{}",
        &readme[..after],
        summary.trim(),
        &readme[end..]
    ))
}

fn workload_title(workload: &str, outcome: &Outcome) -> String {
    let spec = &outcome.spec;
    match workload {
        "big" => format!(
            "big: {} float32 tensors, {}",
            spec.big.len(),
            bytes(crate::spec::total_bytes(&spec.big))
        ),
        "small" => format!(
            "many small: {} tensors of {} float32, {}",
            spec.small.len(),
            spec.small
                .first()
                .map_or(0, |t| t.shape.iter().product::<usize>()),
            bytes(crate::spec::total_bytes(&spec.small))
        ),
        "detectron" => {
            let d = &spec.detectron;
            let params: u64 = d.model.iter().map(|t| t.tensor.nbytes() / 4).sum();
            let momentum = d.model.iter().filter(|t| !t.buffer && t.trainable).count();
            let total = outcome
                .cases
                .iter()
                .find(|c| c.workload == "detectron")
                .map_or(0, |c| c.bytes);
            format!(
                "detectron2-style training checkpoint: R50-FPN, {} tensors ({:.1} M values) + {} SGD momentum buffers + iteration, {}",
                d.model.len(),
                params as f64 / 1e6,
                momentum,
                bytes(total)
            )
        }
        "mpi" => format!(
            "resume on {} MPI ranks: the big checkpoint ({} float32 tensors, {}) with the file on rank 0 only",
            crate::mpi::RANKS,
            spec.big.len(),
            bytes(crate::spec::total_bytes(&spec.big))
        ),
        _ => format!(
            "name matching: {} model keys against {} checkpoint keys",
            spec.matching.keys, spec.matching.keys
        ),
    }
}

fn reference<'a>(outcome: &'a Outcome, case: &Case) -> Option<&'a Case> {
    outcome.cases.iter().find(|c| {
        c.workload == case.workload
            && c.kind == case.kind
            && match case.id {
                "python-n" => c.id == "ckpt-n" && c.arg == case.arg,
                "ckpt-n" => false,
                _ => c.id == "ckpt",
            }
    })
}

fn seconds(case: &Case) -> f64 {
    median(&case.samples.iter().map(|s| s.seconds).collect::<Vec<_>>())
}

/// The fastest and slowest run (the machine may be shared: the spread shows how much).
fn spread(case: &Case) -> String {
    let times = case.samples.iter().map(|s| s.seconds);
    let min = times.clone().fold(f64::INFINITY, f64::min);
    let max = times.fold(0.0, f64::max);
    if case.samples.len() < 2 {
        "—".into()
    } else {
        format!("{} – {}", time(min), time(max))
    }
}

fn open_seconds(case: &Case) -> Option<f64> {
    let opens: Vec<f64> = case.samples.iter().filter_map(|s| s.open_seconds).collect();
    (!opens.is_empty()).then(|| median(&opens))
}

fn added_rss(case: &Case) -> Option<f64> {
    let added: Vec<f64> = case
        .samples
        .iter()
        .filter(|s| s.peak_rss > 0)
        .map(|s| s.added_rss() as f64)
        .collect();
    (!added.is_empty()).then(|| median(&added))
}

fn rss_before(case: &Case) -> Option<f64> {
    let before: Vec<f64> = case
        .samples
        .iter()
        .filter(|s| s.rss_before > 0)
        .map(|s| s.rss_before as f64)
        .collect();
    (!before.is_empty()).then(|| median(&before))
}

fn table(out: &mut String, outcome: &Outcome, rows: &[&Case]) {
    let _ = writeln!(
        out,
        "| operation | contender | median | min – max | GiB/s | × ckpt | open only | added RSS | RSS before |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut last_kind = None;
    for case in rows {
        let t = seconds(case);
        let operation = if last_kind == Some(case.kind) {
            ""
        } else {
            case.kind.label()
        };
        last_kind = Some(case.kind);
        let ratio = match reference(outcome, case) {
            Some(r) if !case.limit => format!("{:.2}", t / seconds(r)),
            Some(r) => format!("({:.2})", t / seconds(r)),
            None => "—".into(),
        };
        let name = if case.id == "ckpt" {
            format!("**{}**", case.label)
        } else {
            case.label.clone()
        };
        let _ = writeln!(
            out,
            "| {operation} | {name} | {} | {} | {} | {ratio} | {} | {} | {} |",
            time(t),
            spread(case),
            if case.bytes > 0 {
                format!("{:.2}", case.bytes as f64 / GIB / t)
            } else {
                "—".into()
            },
            open_seconds(case).map_or("—".into(), time),
            added_rss(case).map_or("—".into(), |b| bytes(b as u64)),
            rss_before(case).map_or("—".into(), |b| bytes(b as u64)),
        );
    }
    let _ = writeln!(
        out,
        "\n(× ckpt in parentheses for a machine limit: the limit's time / ckpt's.)\n"
    );
}

fn matching_table(out: &mut String, outcome: &Outcome, rows: &[&Case]) {
    let _ = writeln!(
        out,
        "| contender | keys | median | × ckpt (same keys) | added RSS |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for case in rows {
        let t = seconds(case);
        let ratio = match reference(outcome, case) {
            Some(r) if r.id != case.id => format!("{:.0}", t / seconds(r)),
            _ => "—".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {ratio} | {} |",
            if case.id == "ckpt" {
                format!("**{}**", case.label)
            } else {
                case.label.clone()
            },
            case.arg,
            time(t),
            added_rss(case).map_or("—".into(), |b| bytes(b as u64)),
        );
    }
    let n = outcome.spec.matching.keys as f64;
    if let Some(largest) = rows
        .iter()
        .filter(|c| c.id == "python-n")
        .max_by_key(|c| c.arg)
    {
        let m = largest.arg as f64;
        let extrapolated = seconds(largest) * (n / m).powi(2);
        let ckpt = rows.iter().find(|c| c.id == "ckpt").map(|c| seconds(c));
        let _ = writeln!(
            out,
            "\ndetectron2's rule compares every pair: at {n:.0} keys that is {:.0e} comparisons \
             and a match list of as many entries (≥ {} in Python), so it is timed at {m:.0} keys \
             and extrapolated by (keys ratio)²: **≈ {}** for {n:.0} keys{}.\n",
            n * n,
            bytes((n * n * 8.0) as u64),
            time(extrapolated),
            ckpt.map_or(String::new(), |c| format!(
                ", ≈ {:.0}× ckpt's {}",
                extrapolated / c,
                time(c)
            ))
        );
    } else {
        let _ = writeln!(out);
    }
}

fn find<'a>(outcome: &'a Outcome, workload: &str, kind: Kind, id: &str) -> Option<&'a Case> {
    outcome
        .cases
        .iter()
        .find(|c| c.workload == workload && c.kind == kind && c.id == id && !c.samples.is_empty())
}

fn check(pass: bool, text: String) -> String {
    format!("- {} {text}", if pass { "met:" } else { "not met:" })
}

/// The performance targets that this run's rows can decide.
fn targets(outcome: &Outcome) -> Vec<String> {
    use Kind::*;
    let mut lines = Vec::new();
    let ratio = |w: &str, kind: Kind, id: &str| -> Option<f64> {
        Some(seconds(find(outcome, w, kind, id)?) / seconds(find(outcome, w, kind, "ckpt")?))
    };
    if let (Some(ckpt), Some(dd)) = (
        find(outcome, "big", Save, "ckpt"),
        find(outcome, "big", Save, "dd"),
    ) {
        let share = seconds(dd) / seconds(ckpt);
        lines.push(check(
            share >= 0.9,
            format!(
                "big save at ≥ 90% of the page-cache write bandwidth: {:.0}%",
                share * 100.0
            ),
        ));
    }
    for (w, kind, id, what, need) in [
        ("big", Save, "torch", "big save ≥ 2× torch.save", 2.0),
        (
            "big",
            LoadEager,
            "torch",
            "big eager load ≥ 3× torch.load",
            3.0,
        ),
        (
            "small",
            Save,
            "torch",
            "many small: save ≥ 50× torch.save",
            50.0,
        ),
        (
            "small",
            LoadEager,
            "torch",
            "many small: load ≥ 50× torch.load",
            50.0,
        ),
    ] {
        if let Some(r) = ratio(w, kind, id) {
            lines.push(check(r >= need, format!("{what}: {r:.1}×")));
        }
    }
    for w in ["big", "small"] {
        if let Some(open) = find(outcome, w, LoadLazy, "ckpt").and_then(open_seconds) {
            let count = if w == "big" {
                outcome.spec.big.len()
            } else {
                outcome.spec.small.len()
            };
            let per_thousand = open * 1e3 / (count as f64 / 1e3);
            lines.push(check(
                per_thousand < 1.0,
                format!("{w}: lazy open under 1 ms per 1,000 tensors: {per_thousand:.3} ms ({} for {count})", time(open)),
            ));
        }
    }
    for w in ["big", "small"] {
        if let Some(case) = find(outcome, w, Save, "ckpt") {
            if let Some(added) = added_rss(case) {
                let share = added / case.bytes as f64;
                lines.push(check(
                    share <= 0.05,
                    format!(
                        "{w}: save adds ≤ 5% of the state's size: {} = {:.1}%",
                        bytes(added as u64),
                        share * 100.0
                    ),
                ));
            }
        }
        if let Some(case) = find(outcome, w, LoadEager, "ckpt") {
            let file =
                std::fs::metadata(outcome.dir.join(format!("{w}.pth"))).map_or(0, |m| m.len());
            if let (Some(added), true) = (added_rss(case), file > 0) {
                let times = added / file as f64;
                lines.push(check(
                    times <= 1.1,
                    format!(
                        "{w}: eager load peaks at ≤ 1.1× the file size: {} = {times:.2}×",
                        bytes(added as u64)
                    ),
                ));
            }
        }
    }
    if let (Some(ckpt), Some(dd)) = (
        find(outcome, "big", SaveDurable, "ckpt"),
        find(outcome, "big", SaveDurable, "dd"),
    ) {
        let over = seconds(ckpt) / seconds(dd) - 1.0;
        lines.push(check(
            over <= 0.10,
            format!(
                "big durable save within 10% of `dd conv=fsync`: {:+.0}%",
                over * 100.0
            ),
        ));
    }
    lines.extend(crate::mpi::targets(outcome));
    lines
}

/// `1.23 s`, `45.6 ms`, `789 µs`.
pub fn time(s: f64) -> String {
    if !s.is_finite() {
        "—".into()
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

/// `1.00 GiB`, `195 MiB`, `12 KiB`.
pub fn bytes(b: u64) -> String {
    let b = b as f64;
    if b >= GIB {
        format!("{:.2} GiB", b / GIB)
    } else if b >= (1 << 20) as f64 {
        format!("{:.0} MiB", b / (1 << 20) as f64)
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cores} cores, {} RAM, Linux {}",
        bytes(mem_kib * 1024),
        kernel.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_section_is_replaced_between_its_markers() {
        let readme = format!("# Title\n\n{README_START}\nold\n{README_END}\n\nrest\n");
        let summary = "Measured by ...\n\n| a |\n";
        let spliced = splice_readme(&readme, summary).unwrap();
        assert_eq!(
            spliced,
            format!("# Title\n\n{README_START}\nMeasured by ...\n\n| a |\n{README_END}\n\nrest\n")
        );
        assert!(splice_readme("no markers", summary).is_err());
    }

    #[test]
    fn a_rewritten_results_file_keeps_the_notes_after_its_marker() {
        let fresh = results_file("# report\n", None);
        assert_eq!(fresh, format!("# report\n\n{NOTES_MARKER}\n"));
        let annotated = format!("# old report\n\n{NOTES_MARKER}\n\n## Notes\n\nwhy\n");
        assert_eq!(
            results_file("# new report", Some(&annotated)),
            format!("# new report\n\n{NOTES_MARKER}\n\n## Notes\n\nwhy\n")
        );
        // A file without the marker (written by hand) has no notes to keep.
        assert_eq!(
            results_file("# r", Some("# old\nnotes\n")),
            fresh.replace("report", "r")
        );
    }

    #[test]
    fn ratios_read_from_ckpts_side() {
        assert_eq!(faster_or_slower(1.6), "1.6× faster");
        assert_eq!(faster_or_slower(42.02), "42× faster");
        assert_eq!(faster_or_slower(1.0 / 1.22), "1.2× slower");
        assert_eq!(faster_or_slower(0.97), "as fast");
        assert_eq!(faster_or_slower(f64::NAN), "—");
    }
}
