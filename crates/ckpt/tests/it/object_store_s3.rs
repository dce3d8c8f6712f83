//! Checkpoints in an S3-compatible object store (the `s3` feature): save, resume, retention,
//! periodic saves, a second writer's refused tag, a killed writer's abandoned upload, a
//! server that goes away mid-save, and PyTorch reading what was written.
//!
//! The server is the one `AWS_ENDPOINT_URL` names (scripts/test.sh starts a local one and
//! creates the bucket `$CKPT_TEST_S3_BUCKET`, `ckpt-test` by default). Without it the tests
//! are skipped loudly, except under `CI=true`, where they fail.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ckpt::store::{ObjectStoreDir, Store};
use ckpt::{Checkpointer, Dict, Error, PeriodicCheckpointer, Value};

use crate::support::*;

/// A fresh prefix `s3://<bucket>/<test>-<unique>` on the test server, or `None` (after
/// saying why) to skip.
pub(crate) fn fresh_prefix(test: &str) -> Option<String> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|e| !e.is_empty());
    if endpoint.is_none() {
        let why = "AWS_ENDPOINT_URL is not set (scripts/test.sh starts a local S3 server)";
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("the object store test {test} must run in CI, but {why}");
        }
        let _ = writeln!(std::io::stderr(), "SKIPPING {test}: {why}");
        return None;
    }
    let bucket = std::env::var("CKPT_TEST_S3_BUCKET").unwrap_or_else(|_| "ckpt-test".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    Some(format!(
        "s3://{bucket}/{test}-{}-{nanos}",
        std::process::id()
    ))
}

fn store(url: &str) -> Arc<ObjectStoreDir> {
    let cache = std::env::temp_dir().join(format!("ckpt-s3-test-cache-{}", std::process::id()));
    Arc::new(
        ObjectStoreDir::builder(url)
            .cache_dir(cache)
            .build()
            .unwrap(),
    )
}

#[test]
fn a_checkpoint_saved_to_s3_resumes_and_lists_with_its_size_and_time() {
    let Some(url) = fresh_prefix("save-resume") else {
        return;
    };
    let saved = model(3.0);
    let checkpointer = Checkpointer::new(saved.clone(), &url);
    let mut extra = Dict::new();
    extra.insert("iteration", Value::Int(41));
    let before = std::time::SystemTime::now();
    checkpointer.save("model_0000041", extra).unwrap();
    let after = std::time::SystemTime::now();

    let entries = store(&url).list_entries().unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["last_checkpoint", "model_0000041.pth"]);
    assert_eq!(entries[0].size, "model_0000041.pth".len() as u64);
    assert!(entries[1].size > 100, "{entries:?}");
    // The objects' Last-Modified (whole seconds, the local server's clock: this one's).
    for entry in &entries {
        let modified = entry.modified.expect("an object's Last-Modified");
        assert!(
            modified + Duration::from_secs(2) >= before && modified <= after,
            "{entry:?}"
        );
    }
    assert_eq!(
        checkpointer.get_checkpoint_file().unwrap().unwrap(),
        std::path::PathBuf::from(format!("{url}/model_0000041.pth"))
    );

    let resumed = model(0.0);
    let extra = Checkpointer::new(resumed.clone(), &url)
        .resume_or_load(None, true)
        .unwrap();
    assert_eq!(extra.get("iteration").and_then(|v| v.as_int()), Some(41));
    assert!(same_state(&state_of(&resumed), &state_of(&saved)));

    // The same object as a checkpoint path.
    let loaded = model(0.0);
    Checkpointer::new(loaded.clone(), "")
        .load(
            format!("{url}/model_0000041.pth"),
            ckpt::Checkpointables::None,
        )
        .unwrap();
    assert!(same_state(&state_of(&loaded), &state_of(&saved)));
}

#[test]
fn a_detection_checkpointer_resumes_from_s3() {
    let Some(url) = fresh_prefix("detection") else {
        return;
    };
    let saved = model(2.5);
    let mut extra = Dict::new();
    extra.insert("iteration", Value::Int(7));
    ckpt::DetectionCheckpointer::new(saved.clone(), &url)
        .save("model_0000007", extra)
        .unwrap();
    let resumed = model(0.0);
    let extra = ckpt::DetectionCheckpointer::new(resumed.clone(), &url)
        .resume_or_load(None, true)
        .unwrap();
    assert_eq!(extra.get("iteration").and_then(|v| v.as_int()), Some(7));
    assert!(same_state(&state_of(&resumed), &state_of(&saved)));
}

#[test]
fn periodic_retention_on_s3_deletes_only_its_own_old_checkpoints() {
    let Some(url) = fresh_prefix("periodic") else {
        return;
    };
    let objects = store(&url);
    objects
        .write("notes.txt", &mut |w| {
            w.write_all(b"keep me")
                .map_err(|e| Error::io("notes.txt", e))
        })
        .unwrap();
    let mut periodic = PeriodicCheckpointer::builder(Checkpointer::new(model(1.0), &url))
        .period(1)
        .max_to_keep(Some(2))
        .build()
        .unwrap();
    for iteration in 0..5 {
        periodic.step(iteration, Dict::new()).unwrap();
    }
    assert_eq!(
        objects.list().unwrap(),
        [
            "ckpt_retention.json",
            "last_checkpoint",
            "model_0000003.pth",
            "model_0000004.pth",
            "notes.txt"
        ]
    );
    assert_eq!(
        objects.read_small("last_checkpoint").unwrap().unwrap(),
        b"model_0000004.pth"
    );
}

#[test]
fn a_second_writers_tag_is_never_silently_overwritten() {
    let Some(url) = fresh_prefix("two-writers") else {
        return;
    };
    let first = Checkpointer::new(model(1.0), &url);
    let second = Checkpointer::new(model(2.0), &url);
    first.save("model_0000001", Dict::new()).unwrap();
    // The second writer takes over the tag it found...
    second.save("model_0000002", Dict::new()).unwrap();
    // ...and the first one, whose tag was replaced behind its back, is refused.
    let err = first.save("model_0000003", Dict::new()).unwrap_err();
    // The checkpoint is written but not tagged, because of the conflict.
    assert!(
        matches!(&err, Error::NotTagged { source, .. } if matches!(**source, Error::Conflict { .. })),
        "{err:?}"
    );
    let text = err.report().to_string();
    assert!(text.contains(&format!("{url}/last_checkpoint")), "{text}");
    assert_eq!(
        store(&url).read_small("last_checkpoint").unwrap().unwrap(),
        b"model_0000002.pth"
    );
}

#[test]
fn pytorch_loads_a_checkpoint_read_from_s3_with_boto3() {
    let Some(url) = fresh_prefix("torch-reads") else {
        return;
    };
    let Some(python) = python::interop_python("the boto3 + torch.load test", "torch, boto3") else {
        return;
    };
    Checkpointer::new(model(5.0), &url)
        .save("model_final", Dict::new())
        .unwrap();
    let (bucket, prefix) = url["s3://".len()..].split_once('/').unwrap();
    let script = r#"
import io, sys, boto3, torch
bucket, key = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3")
tag = s3.get_object(Bucket=bucket, Key=key + "/last_checkpoint")["Body"].read().decode()
body = s3.get_object(Bucket=bucket, Key=key + "/" + tag)["Body"].read()
ckpt = torch.load(io.BytesIO(body), weights_only=True)
print(tag, sorted(ckpt["model"].keys()), float(ckpt["model"]["layer1.weight"].flatten()[0]))
"#;
    let out = Command::new(python)
        .args(["-c", script, bucket, prefix])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(line.starts_with("model_final.pth ["), "{line}");
    assert!(line.ends_with(" 5.0"), "{line}");
}

#[test]
fn a_killed_writer_leaves_the_previous_checkpoint_and_its_upload_is_aborted_later() {
    let Some(url) = fresh_prefix("killed-writer") else {
        return;
    };
    let saved = model(4.0);
    let checkpointer = Checkpointer::new(saved.clone(), &url);
    checkpointer.save("model_0000001", Dict::new()).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_ckpt-test-child"))
        .args(["upload-and-hang", &url, "model_0000002.pth"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "uploading");
    std::thread::sleep(Duration::from_millis(500)); // the parts reach the server
    child.kill().unwrap(); // SIGKILL: no abort
    child.wait().unwrap();

    let objects = store(&url);
    assert_eq!(
        uploads_in_progress(&objects),
        1,
        "the killed writer's upload is open"
    );
    assert_eq!(
        objects.list().unwrap(),
        ["last_checkpoint", "model_0000001.pth"]
    );
    let resumed = model(0.0);
    Checkpointer::new(resumed.clone(), &url)
        .resume_or_load(None, true)
        .unwrap();
    assert!(same_state(&state_of(&resumed), &state_of(&saved)));

    // The next save cleans up the upload of the writer that is gone.
    checkpointer.save("model_0000003", Dict::new()).unwrap();
    assert_eq!(uploads_in_progress(&objects), 0);
}

/// The open uploads of `objects`' prefix, as the markers beside the checkpoints say (they
/// are temporaries, hidden from the store's listings).
fn uploads_in_progress(objects: &ObjectStoreDir) -> usize {
    raw_names(&objects.url())
        .iter()
        .filter(|n| n.starts_with(ckpt::store::TEMP_PREFIX) && n.ends_with(".upload"))
        .count()
}

/// The names under a prefix, temporaries included, through the S3 API (ListObjectsV2).
fn raw_names(url: &str) -> Vec<String> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let (bucket, key) = url["s3://".len()..].split_once('/').unwrap();
    let body = http_get(host, &format!("/{bucket}?list-type=2&prefix={key}/"));
    body.split("<Key>")
        .skip(1)
        .filter_map(|rest| rest.split_once("</Key>").map(|(k, _)| k.to_string()))
        .filter_map(|k| k.rsplit_once('/').map(|(_, name)| name.to_string()))
        .collect()
}

/// A plain unsigned GET (the local test server does not check signatures).
fn http_get(host: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(host).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn a_server_gone_mid_save_is_a_clear_error_and_loses_nothing() {
    let Some(url) = fresh_prefix("server-gone") else {
        return;
    };
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let upstream = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let proxy = Proxy::start(upstream);
    let through_proxy = |url: &str| {
        ObjectStoreDir::builder(url)
            .with_config("aws_endpoint", format!("http://{}", proxy.address))
            .part_size(5 << 20)
            .retries(1, Duration::from_secs(2))
            .build()
            .unwrap()
    };
    let saved = model(6.0);
    let checkpointer = Checkpointer::with_store(saved.clone(), Arc::new(through_proxy(&url)));
    checkpointer.save("model_0000001", Dict::new()).unwrap();

    let objects = through_proxy(&url);
    let mut pending = objects.create("model_0000002.pth").unwrap();
    pending.write_all(&vec![1u8; 6 << 20]).unwrap(); // one part sent
    proxy.stop();
    let err = pending
        .write_all(&vec![1u8; 6 << 20])
        .map_err(|e| Error::io("model_0000002.pth", e))
        .and_then(|()| pending.commit())
        .unwrap_err();
    let text = err.report().to_string();
    assert!(text.contains(&format!("{url}/model_0000002.pth")), "{text}");

    let direct = store(&url);
    assert_eq!(
        direct.list().unwrap(),
        ["last_checkpoint", "model_0000001.pth"]
    );
    let resumed = model(0.0);
    Checkpointer::with_store(resumed.clone(), direct)
        .resume_or_load(None, true)
        .unwrap();
    assert!(same_state(&state_of(&resumed), &state_of(&saved)));
}

/// A TCP proxy to the test server that can be stopped: every connection, open or new, is
/// then closed, as when a server goes away.
struct Proxy {
    address: String,
    stopped: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = stopped.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                if flag.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        let mut buffer = vec![0u8; 64 * 1024];
                        from.set_read_timeout(Some(Duration::from_millis(100))).ok();
                        loop {
                            if flag.load(Ordering::SeqCst) {
                                break;
                            }
                            match from.read(&mut buffer) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if to.write_all(&buffer[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = from.shutdown(std::net::Shutdown::Both);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { address, stopped }
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn background_periodic_saves_to_s3_resume_and_keep_retention() {
    let Some(url) = fresh_prefix("async-periodic") else {
        return;
    };
    let trained = model(0.0);
    let mut periodic = PeriodicCheckpointer::builder(Checkpointer::new(trained.clone(), &url))
        .period(1)
        .max_to_keep(Some(2))
        .async_save(true)
        .build()
        .unwrap();
    for iteration in 0..4 {
        *trained.lock().unwrap() = ckpt::StateDictModel::new(model_state(iteration as f32));
        periodic.step(iteration, Dict::new()).unwrap();
    }
    periodic.flush().unwrap();
    assert_eq!(
        store(&url).list().unwrap(),
        [
            "ckpt_retention.json",
            "last_checkpoint",
            "model_0000002.pth",
            "model_0000003.pth"
        ]
    );

    let resumed = model(-1.0);
    let extra = Checkpointer::new(resumed.clone(), &url)
        .resume_or_load(None, true)
        .unwrap();
    assert_eq!(extra.get("iteration").and_then(|v| v.as_int()), Some(3));
    assert!(same_state(&state_of(&resumed), &model_state(3.0)));
}

/// Copies a prefix to a local directory, or a local directory to a prefix, as `aws s3 sync`
/// does (boto3), and resumes or saves there with fvcore's Checkpointer.
const SYNC_WITH_FVCORE: &str = r#"
import json, os, sys, boto3, torch
from fvcore.common.checkpoint import Checkpointer
mode, bucket, prefix, local = sys.argv[1:5]
s3 = boto3.client("s3")
model = torch.nn.Module()
model.layer1 = torch.nn.Linear(3, 2)
model.layer2 = torch.nn.Linear(2, 2)
if mode == "down":
    os.makedirs(local, exist_ok=True)
    for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", []):
        name = item["Key"][len(prefix) + 1:]
        s3.download_file(bucket, item["Key"], os.path.join(local, name))
    checkpointer = Checkpointer(model, local)
    extra = checkpointer.resume_or_load("", resume=True)
    print(json.dumps({"iteration": extra.get("iteration"),
                      "values": sorted({float(v) for p in model.parameters() for v in p.flatten()})}))
else:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(4.0)
    Checkpointer(model, local).save("model_0000009", iteration=9)
    for name in sorted(os.listdir(local)):
        s3.upload_file(os.path.join(local, name), bucket, prefix + "/" + name)
    print(json.dumps({"uploaded": sorted(os.listdir(local))}))
"#;

#[test]
fn a_prefix_synced_to_disk_resumes_in_fvcore_and_a_synced_fvcore_directory_resumes_from_s3() {
    let Some(url) = fresh_prefix("sync") else {
        return;
    };
    let Some(python) = python::interop_python(
        "the s3 sync + fvcore test",
        "torch, boto3, fvcore.common.checkpoint",
    ) else {
        return;
    };
    let sync = |mode: &str, url: &str, local: &std::path::Path| -> serde_json::Value {
        let (bucket, prefix) = url["s3://".len()..].split_once('/').unwrap();
        let out = Command::new(&python)
            .args(["-c", SYNC_WITH_FVCORE, mode, bucket, prefix])
            .arg(local)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap()
    };

    // ckpt saves to S3; the prefix copied to disk resumes in fvcore.
    let trained = model(0.0);
    let mut periodic = PeriodicCheckpointer::builder(Checkpointer::new(trained.clone(), &url))
        .period(1)
        .max_to_keep(Some(2))
        .build()
        .unwrap();
    for iteration in 0..3 {
        *trained.lock().unwrap() = ckpt::StateDictModel::new(model_state(iteration as f32 + 1.0));
        periodic.step(iteration, Dict::new()).unwrap();
    }
    let down = tempfile::tempdir().unwrap();
    let resumed = sync("down", &url, down.path());
    assert_eq!(resumed["iteration"], 2, "{resumed}");
    assert_eq!(resumed["values"], serde_json::json!([3.0]), "{resumed}");

    // fvcore saves to disk; the directory copied to S3 resumes in ckpt.
    let other = format!("{url}-from-fvcore");
    let up = tempfile::tempdir().unwrap();
    let uploaded = sync("up", &other, up.path());
    assert_eq!(
        uploaded["uploaded"],
        serde_json::json!(["last_checkpoint", "model_0000009.pth"])
    );
    let resumed = model(0.0);
    let extra = Checkpointer::new(resumed.clone(), &other)
        .resume_or_load(None, true)
        .unwrap();
    assert_eq!(extra.get("iteration").and_then(|v| v.as_int()), Some(9));
    assert!(same_state(&state_of(&resumed), &model_state(4.0)));
}
