//! Runs a command and prints the peak resident memory of its process as its last line,
//! `peak-rss-bytes=N` (Linux).
//!
//! ```text
//! cargo run -p ckpt-cli --example peak_rss -- PROGRAM [ARGS...]
//! ```
//!
//! The conversion-memory tests start `ckpt convert` through it: Linux counts in a process's
//! peak the memory of the process that spawned it, and the test process is large, this one
//! small.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: peak_rss PROGRAM [ARGS...]");
        return ExitCode::from(2);
    };
    let shown = program.to_string_lossy().into_owned();
    let status = match Command::new(&program).args(args).status() {
        Ok(status) => status,
        Err(e) => {
            eprintln!("peak_rss: cannot run {shown}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !status.success() {
        eprintln!("peak_rss: {shown} failed ({status})");
        return ExitCode::FAILURE;
    }
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage`; getrusage only writes into it.
    let done = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    if done != 0 {
        eprintln!("peak_rss: getrusage: {}", std::io::Error::last_os_error());
        return ExitCode::FAILURE;
    }
    // The only child this process waited for is the command; Linux reports KiB.
    println!("peak-rss-bytes={}", usage.ru_maxrss as u64 * 1024);
    ExitCode::SUCCESS
}
