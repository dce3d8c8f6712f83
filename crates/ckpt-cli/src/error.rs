//! The command's error: one line for people, exit code 1.

use std::fmt;
use std::process::ExitCode;

/// What went wrong, said in one line (`ckpt: <message>`).
#[derive(Debug)]
pub enum CliError {
    /// A failure to report, already naming the file it concerns.
    Message(String),
    /// stdout was closed by the reader (`ckpt inspect x | head`): not an error.
    BrokenPipe,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> CliError {
        CliError::Message(message.into())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Message(m) => f.write_str(&one_line(m)),
            CliError::BrokenPipe => f.write_str("broken pipe"),
        }
    }
}

impl From<ckpt::Error> for CliError {
    /// The error with its causes, each said once (`<file>: <what>: <cause>`).
    fn from(e: ckpt::Error) -> CliError {
        CliError::Message(e.report().to_string())
    }
}

/// What went wrong, with its causes, without the file the error names: for output that
/// names the file already (a row of `ckpt ls`).
pub fn without_file(e: &ckpt::Error) -> String {
    match e {
        ckpt::Error::File { source, .. } => without_file(source),
        ckpt::Error::Io { source, .. } => source.to_string(),
        other => other.report().to_string(),
    }
}

/// Folds a message onto one line (library messages may quote multi-line content).
pub fn one_line(message: &str) -> String {
    if message.contains(['\n', '\r']) {
        message
            .split(['\n', '\r'])
            .filter(|part| !part.trim().is_empty())
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        message.to_string()
    }
}

/// Prints help and version as clap does; any other argument error in one line, exit code 1.
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let rendered = e.render().to_string();
            let mut lines = rendered.lines().filter(|line| !line.trim().is_empty());
            let first = lines.next().unwrap_or("invalid arguments");
            let mut first = first.strip_prefix("error: ").unwrap_or(first).to_string();
            // "the following required arguments were not provided:" lists them below.
            if first.ends_with(':') {
                let listed: Vec<&str> = lines
                    .take_while(|line| line.starts_with(' '))
                    .map(str::trim)
                    .collect();
                first = format!("{first} {}", listed.join(", "));
            }
            eprintln!("ckpt: {first} (see 'ckpt --help')");
            ExitCode::FAILURE
        }
    }
}

/// A panic is a bug in ckpt, never the user's fault: say so in one line, without a backtrace
/// unless `RUST_BACKTRACE` asks for one.
pub fn install_panic_hook() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "ckpt: internal error (a bug in ckpt, please report it): {}{place}",
            one_line(&message)
        );
    }));
}
