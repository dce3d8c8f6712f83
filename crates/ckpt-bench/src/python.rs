//! The Python contenders, driven through `bench/torch_contender.py serve`: one long-lived
//! interpreter that has imported torch, forking a fresh child per measurement.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::json;

use crate::measure::Sample;

/// A running contender server.
pub struct PythonServer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    log: PathBuf,
    /// The torch version the server reported.
    pub torch_version: String,
}

type BoxError = Box<dyn std::error::Error>;

impl PythonServer {
    /// Starts `python script serve`, its stderr going to `log`, and waits until torch is
    /// imported.
    pub fn start(python: &Path, script: &Path, log: &Path) -> Result<PythonServer, BoxError> {
        let stderr = std::fs::File::create(log)?;
        let mut child = Command::new(python)
            .arg(script)
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("python started without pipes".into());
        };
        let mut server = PythonServer {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            log: log.to_path_buf(),
            torch_version: String::new(),
        };
        let ready: serde_json::Value = serde_json::from_str(&server.read_line()?)?;
        server.torch_version = ready["torch"].as_str().unwrap_or("?").to_string();
        Ok(server)
    }

    fn read_line(&mut self) -> Result<String, BoxError> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err(format!("the Python contender stopped; see {}", self.log.display()).into());
        }
        Ok(line)
    }

    /// Runs one Python operation in a forked child and returns its measurement.
    pub fn run(
        &mut self,
        op: &str,
        workload: &str,
        dir: &Path,
        arg: u64,
    ) -> Result<Sample, BoxError> {
        let request = json!({"op": op, "workload": workload, "dir": dir, "arg": arg});
        let stdin = self
            .stdin
            .as_mut()
            .ok_or("the Python contender is closed")?;
        writeln!(stdin, "{request}")?;
        stdin.flush()?;
        let line = self.read_line()?;
        let answer: serde_json::Value = serde_json::from_str(&line)?;
        if let Some(error) = answer.get("error") {
            return Err(format!(
                "python {op} on {workload}: {error} (log: {})",
                self.log.display()
            )
            .into());
        }
        Ok(serde_json::from_value(answer)?)
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        // Closing stdin ends the server's loop; wait so no process outlives the benchmark.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
