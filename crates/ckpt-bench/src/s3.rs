//! `ckpt-bench s3`: saving and loading checkpoints in an S3-compatible object store (a local
//! server), next to the same bytes uploaded and downloaded by plain `object_store` calls
//! (the limit for ckpt: the same client, the same part size and parallelism) and by boto3.
//!
//! Every measurement runs in a child process of its own (`ckpt-bench s3-child`), so that its
//! peak memory is its own. The report is a Markdown table on stdout.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use ckpt::store::{ObjectStoreDir, Store};
use ckpt::{shared, Checkpointer, Dict, StateDictModel};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

use crate::measure::{measure, median, Sample};
use crate::spec::{total_bytes, Spec, TensorSpec};
use crate::state::random_state;

type BoxError = Box<dyn std::error::Error>;

/// Part size and parts in flight of every contender (ckpt's defaults).
const PART: usize = 16 << 20;
const IN_FLIGHT: usize = 8;
/// Per request: a local server assembling a 1 GiB upload on a busy machine can take longer
/// than the client's default 30 s, and a completion that times out is retried (with backoff)
/// until the retries fail, before ckpt finds the completed object (and plain object_store
/// fails): either way the time measured would be the retries'.
const TIMEOUT: &str = "600s";

/// What the parent asks a child to measure.
pub struct Job<'a> {
    pub op: &'a str,
    pub workload: &'a str,
    pub url: &'a str,
    pub dir: &'a Path,
    pub quick: bool,
}

fn tensors(spec: &Spec, workload: &str) -> Result<Vec<TensorSpec>, BoxError> {
    match workload {
        "big" => Ok(spec.big.clone()),
        "small" => Ok(spec.small.clone()),
        other => Err(format!("unknown workload {other} (big, small)").into()),
    }
}

fn store(url: &str, cache: &Path) -> Result<ObjectStoreDir, BoxError> {
    Ok(ObjectStoreDir::builder(url)
        .with_config("timeout", TIMEOUT)
        .part_size(PART)
        .parts_in_flight(IN_FLIGHT)
        .cache_dir(cache)
        .build()?)
}

/// `s3://bucket/prefix` → the plain client of `bucket` and the key `prefix/name`.
fn plain(url: &str, name: &str) -> Result<(Arc<dyn ObjectStore>, ObjectPath), BoxError> {
    let rest = url.strip_prefix("s3://").ok_or("not an s3:// URL")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    // The provider ckpt's store installs too (the client is built without a default one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_config("timeout".parse()?, TIMEOUT)
        .build()?;
    let key = if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{}/{name}", prefix.trim_matches('/'))
    };
    Ok((Arc::new(client), ObjectPath::from(key)))
}

fn runtime() -> Result<tokio::runtime::Runtime, BoxError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// One measurement, in this (child) process.
pub fn child(job: &Job<'_>) -> Result<Sample, BoxError> {
    let spec = Spec::new(job.quick);
    let cache = job.dir.join("cache");
    let local_copy = job.dir.join(format!("{}.pth", job.workload));
    let name = format!("{}.pth", job.workload);
    match job.op {
        "ckpt-save" => {
            let state = random_state(&tensors(&spec, job.workload)?)?;
            let model = shared(StateDictModel::new(state));
            let checkpointer = Checkpointer::with_store(model, Arc::new(store(job.url, &cache)?));
            let (sample, result) = measure(|| checkpointer.save(job.workload, Dict::new()));
            result?;
            Ok(sample)
        }
        "ckpt-load" => {
            let _ = std::fs::remove_dir_all(&cache);
            let objects = store(job.url, &cache)?;
            let (sample, result) = measure(|| -> Result<u64, BoxError> {
                let file = objects.local_file(&name)?;
                let state = ckpt::format::load(&file)?;
                Ok(crate::state::touch_value(&state))
            });
            let touched = result?;
            Ok(Sample {
                note: Some(format!("{touched} bytes")),
                ..sample
            })
        }
        "plain-put" => {
            // The bytes ckpt saved, read from a local copy in parts as a program would.
            let (client, path) = plain(job.url, &format!("plain-{name}"))?;
            let rt = runtime()?;
            let (sample, result) = measure(|| {
                rt.block_on(async {
                    let mut file = std::fs::File::open(&local_copy)?;
                    let upload = client.put_multipart(&path).await?;
                    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
                    let mut chunk = vec![0u8; PART];
                    loop {
                        let n = file.read(&mut chunk)?;
                        if n == 0 {
                            break;
                        }
                        writer.wait_for_capacity(IN_FLIGHT).await?;
                        writer.write(&chunk[..n]);
                    }
                    writer.finish().await?;
                    Ok::<_, BoxError>(())
                })
            });
            result?;
            Ok(sample)
        }
        "plain-get" => {
            // Ranges of the part size, IN_FLIGHT at once, written in order to a local file:
            // what ckpt's load does before it reads the file.
            let (client, path) = plain(job.url, &name)?;
            let rt = runtime()?;
            let out = job.dir.join("plain-get.bin");
            let (sample, result) = measure(|| {
                rt.block_on(async {
                    use futures::{StreamExt, TryStreamExt};
                    use std::io::Write;
                    let size = client.head(&path).await?.size;
                    let mut file = std::fs::File::create(&out)?;
                    let ranges: Vec<_> = (0..size.div_ceil(PART as u64))
                        .map(|i| i * PART as u64..((i + 1) * PART as u64).min(size))
                        .collect();
                    let mut chunks = futures::stream::iter(ranges)
                        .map(|r| {
                            let client = client.clone();
                            let path = path.clone();
                            async move { client.get_range(&path, r).await }
                        })
                        .buffered(IN_FLIGHT);
                    while let Some(chunk) = chunks.try_next().await? {
                        file.write_all(&chunk)?;
                    }
                    Ok::<_, BoxError>(())
                })
            });
            result?;
            let _ = std::fs::remove_file(&out);
            Ok(sample)
        }
        other => Err(format!("unknown op {other}").into()),
    }
}

/// boto3's upload_file / download_file of the same bytes (its transfer manager, with the
/// same part size and parallelism), timed and measured inside Python.
const BOTO3: &str = r#"
import resource, sys, time, boto3
from boto3.s3.transfer import TransferConfig
op, bucket, key, local = sys.argv[1:5]
config = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20, max_concurrency=8)
s3 = boto3.client("s3")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
if op == "put":
    s3.upload_file(local, bucket, key, Config=config)
else:
    s3.download_file(bucket, key, local, Config=config)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(f'{{"seconds": {seconds}, "rss_before": {before}, "peak_rss": {peak}}}')
"#;

fn boto3(
    python: &Path,
    op: &str,
    url: &str,
    key_name: &str,
    local: &Path,
) -> Result<Sample, BoxError> {
    let rest = url.strip_prefix("s3://").ok_or("not an s3:// URL")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let key = format!("{}/{key_name}", prefix.trim_matches('/'));
    let out = Command::new(python)
        .args(["-c", BOTO3, op, bucket, &key])
        .arg(local)
        .output()?;
    if !out.status.success() {
        return Err(format!("boto3 {op}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let line = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(line.trim())?)
}

fn run_child(exe: &Path, job: &Job<'_>) -> Result<Sample, BoxError> {
    let mut command = Command::new(exe);
    command.args([
        "s3-child",
        "--op",
        job.op,
        "--workload",
        job.workload,
        "--url",
        job.url,
    ]);
    command.arg("--dir").arg(job.dir);
    if job.quick {
        command.arg("--quick");
    }
    let out = command.output()?;
    if !out.status.success() {
        return Err(format!(
            "{} {}: {}",
            job.op,
            job.workload,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(serde_json::from_str(
        String::from_utf8_lossy(&out.stdout).trim(),
    )?)
}

/// Runs every contender `reps` times on each workload and prints the table.
pub fn run(
    url: &str,
    dir: &Path,
    quick: bool,
    reps: usize,
    python: Option<PathBuf>,
    workloads: &[String],
) -> Result<(), BoxError> {
    let exe = std::env::current_exe()?;
    let spec = Spec::new(quick);
    std::fs::create_dir_all(dir)?;
    println!("| workload | contender | save s | save MB/s | save peak +MiB | load s | load MB/s | load peak +MiB |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for workload in workloads {
        let bytes = total_bytes(&tensors(&spec, workload)?) as f64;
        let job = |op| Job {
            op,
            workload,
            url,
            dir,
            quick,
        };
        let mut rows: Vec<(&str, Vec<Sample>, Vec<Sample>)> = Vec::new();
        let mut ckpt_rows = (Vec::new(), Vec::new());
        let mut plain_rows = (Vec::new(), Vec::new());
        let mut boto_rows = (Vec::new(), Vec::new());
        let local_copy = dir.join(format!("{workload}.pth"));
        for _ in 0..reps {
            ckpt_rows.0.push(run_child(&exe, &job("ckpt-save"))?);
            ckpt_rows.1.push(run_child(&exe, &job("ckpt-load"))?);
            // The local copy of what ckpt saved, for the other contenders' uploads.
            let copy = store(url, &dir.join("cache"))?.local_file(&format!("{workload}.pth"))?;
            std::fs::copy(&copy, &local_copy)?;
            plain_rows.0.push(run_child(&exe, &job("plain-put"))?);
            plain_rows.1.push(run_child(&exe, &job("plain-get"))?);
            if let Some(python) = &python {
                let name = format!("boto3-{workload}.pth");
                boto_rows
                    .0
                    .push(boto3(python, "put", url, &name, &local_copy)?);
                let target = dir.join("boto3-get.bin");
                boto_rows.1.push(boto3(python, "get", url, &name, &target)?);
                let _ = std::fs::remove_file(target);
            }
        }
        rows.push(("ckpt (Checkpointer save / load)", ckpt_rows.0, ckpt_rows.1));
        rows.push((
            "object_store put / get (the limit)",
            plain_rows.0,
            plain_rows.1,
        ));
        if python.is_some() {
            rows.push((
                "boto3 upload_file / download_file",
                boto_rows.0,
                boto_rows.1,
            ));
        }
        let mib = |s: &[Sample]| {
            median(
                &s.iter()
                    .map(|x| x.added_rss() as f64 / 1048576.0)
                    .collect::<Vec<_>>(),
            )
        };
        for (name, save, load) in rows {
            let save_s = median(&save.iter().map(|s| s.seconds).collect::<Vec<_>>());
            let load_s = median(&load.iter().map(|s| s.seconds).collect::<Vec<_>>());
            println!(
                "| {workload} | {name} | {save_s:.2} | {:.0} | {:.0} | {load_s:.2} | {:.0} | {:.0} |",
                bytes / save_s / 1e6,
                mib(&save),
                bytes / load_s / 1e6,
                mib(&load),
            );
        }
        let _ = std::fs::remove_file(&local_copy);
    }
    let _ = std::fs::remove_dir_all(dir.join("cache"));
    Ok(())
}
