//! Backup and restore on a real cluster: `roster snapshot save` under write load, every
//! node's data wiped, each directory seeded with `roster snapshot restore`, the cluster
//! started again; every write acknowledged at or before the saved revision is back, and
//! the restored cluster takes writes. A truncated or bit-flipped backup, or a non-empty
//! data directory, is refused with a message naming the problem, and nothing is written.

use roster_tests::{TestCluster, eventually, json, ok, roster_bin};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// A put acknowledged by the cluster, with the revision its answer named.
#[derive(Clone, Debug)]
struct Acked {
    key: String,
    value: String,
    revision: u64,
}

/// `kv put --json` in a loop, one client process per put, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    handle: std::thread::JoinHandle<Vec<Acked>>,
}

impl Load {
    fn start(c: &TestCluster) -> Load {
        let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (stop2, acked2) = (stop.clone(), acked.clone());
        let (endpoints, token_file) = (c.endpoints(), c.token_file.clone());
        let handle = std::thread::spawn(move || {
            let mut done = Vec::new();
            for i in 0u64.. {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let (key, value) = (format!("k{i:05}"), format!("v{i}"));
                let out = Command::new(roster_bin())
                    .args(["kv", "put", &key, &value, "--json", "--timeout-ms", "3000", "--endpoints", &endpoints])
                    .arg("--token-file")
                    .arg(&token_file)
                    .env_remove("ROSTER_TOKEN")
                    .output()
                    .expect("run roster kv put");
                let reply: Option<Value> =
                    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten();
                if let Some(revision) = reply.and_then(|v| v["revision"].as_u64()) {
                    done.push(Acked { key, value, revision });
                    acked2.fetch_add(1, Ordering::SeqCst);
                }
            }
            done
        });
        Load { stop, acked, handle }
    }

    fn wait_acked(&self, n: usize) {
        let target = self.acked.load(Ordering::SeqCst) + n;
        eventually(Duration::from_secs(60), &format!("{n} more acknowledged puts"), || {
            (self.acked.load(Ordering::SeqCst) >= target).then_some(())
        });
    }

    fn finish(self) -> Vec<Acked> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("load thread")
    }
}

fn restore(file: &Path, data_dir: &Path, id: u64, peers: Option<&str>) -> Output {
    let mut cmd = Command::new(roster_bin());
    cmd.args(["snapshot", "restore"]).arg(file).arg("--data-dir").arg(data_dir).args(["--id", &id.to_string()]);
    if let Some(p) = peers {
        cmd.args(["--peers", p]);
    }
    cmd.output().expect("run roster snapshot restore")
}

/// A restore of `file` that must fail with a message containing `names`, leaving
/// `data_dir` absent.
fn refused(file: &Path, data_dir: &Path, names: &str) {
    let out = restore(file, data_dir, 1, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "restore of {} must fail: {stderr}", file.display());
    assert!(stderr.contains(names), "expected {names:?} in: {stderr}");
    assert!(stderr.lines().count() == 1, "one line: {stderr}");
    assert!(!data_dir.exists(), "a refused restore wrote {}", data_dir.display());
}

#[test]
fn a_snapshot_saved_under_load_restores_a_wiped_cluster() {
    let mut c = TestCluster::start("backup", 3, |_| vec![]);
    let saved_cluster = c.wait_cluster_id(Duration::from_secs(20));
    let peers = c.nodes.values().map(|n| format!("{}={}", n.id, n.addr)).collect::<Vec<_>>().join(",");
    let backup = c.dir.0.join("cluster.backup");

    let load = Load::start(&c);
    load.wait_acked(20);
    let saved = json(&c.roster(&["snapshot", "save", backup.to_str().unwrap(), "--json", "--timeout-ms", "20000"]));
    let revision = saved["revision"].as_u64().unwrap_or_else(|| panic!("no revision: {saved}"));
    load.wait_acked(10);
    let acked = load.finish();
    let before: Vec<&Acked> = acked.iter().filter(|a| a.revision <= revision).collect();
    assert!(before.len() >= 20, "{} writes acknowledged by revision {revision}", before.len());
    assert!(acked.iter().any(|a| a.revision > revision), "the load went on during and after the save");
    let text = ok(&c.roster(&["snapshot", "save", c.dir.0.join("second").to_str().unwrap()]));
    assert!(text.starts_with("saved revision "), "{text}");

    // Damaged backups and a used directory are refused before anything is written.
    let bytes = std::fs::read(&backup).expect("read the backup");
    assert_eq!(bytes.len() as u64, saved["bytes"].as_u64().unwrap() + 50, "{saved}");
    let scratch = c.dir.0.join("scratch");
    let truncated = c.dir.0.join("truncated.backup");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    refused(&truncated, &scratch, "is truncated: the header promises");
    let flipped = c.dir.0.join("flipped.backup");
    let mut damaged = bytes.clone();
    let middle = 50 + (damaged.len() - 50) / 2;
    damaged[middle] ^= 0x10;
    std::fs::write(&flipped, &damaged).unwrap();
    refused(&flipped, &scratch, "snapshot checksum mismatch");
    let mut damaged = bytes.clone();
    damaged[12] ^= 0x01;
    std::fs::write(&flipped, &damaged).unwrap();
    refused(&flipped, &scratch, "header checksum mismatch");
    refused(&c.dir.0.join("absent.backup"), &scratch, "absent.backup");
    let out = restore(&backup, &c.data_dir(1), 1, Some(&peers));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("is not empty"), "{stderr}");

    // Wipe every node, restore each directory from the same file, start them.
    for id in 1..=3 {
        c.kill9(id);
        std::fs::remove_dir_all(c.data_dir(id)).expect("wipe the data directory");
    }
    for id in 1..=3 {
        // Node 3 takes the saved cluster's membership (the same addresses here).
        let peers = (id != 3).then_some(peers.as_str());
        let out = restore(&backup, &c.data_dir(id), id, peers);
        let text = ok(&out);
        assert!(text.contains(&format!("restored revision {revision}")), "{text}");
    }
    for id in 1..=3 {
        c.spawn(id);
    }
    let status = c.wait_leader(Duration::from_secs(30));
    assert!(status["revision"].as_u64().unwrap() >= revision, "{status}");
    for a in &before {
        let got = c.kv_get_at(&c.endpoints(), &a.key, false);
        assert_eq!(got.as_deref(), Some(a.value.as_str()), "{} (acknowledged at revision {})", a.key, a.revision);
    }
    // The restored cluster is a working one: it takes writes and its servers register.
    let v = json(&c.roster(&["kv", "put", "after-restore", "yes", "--json", "--timeout-ms", "10000"]));
    assert!(v["revision"].as_u64().unwrap() > revision, "{v}");
    c.wait_servers(3, Duration::from_secs(20));
    // Same addresses, same key, same state: still another cluster, with an id of its own,
    // so no node of the saved cluster is taken for one of the restored one.
    let restored_cluster = c.wait_cluster_id(Duration::from_secs(20));
    assert_ne!(restored_cluster, saved_cluster, "a restored backup forms a new cluster id");
    eprintln!("restored {} writes of revision {revision}; {} acknowledged in all", before.len(), acked.len());
}
