//! Log compaction: with the entry count set far out of reach, a snapshot still follows
//! `snapshot_log_bytes` of log, on every node, and the data survives a restart from it.

use roster_tests::{TempDir, TestCluster, eventually, ok};
use std::time::Duration;

const LOG_BYTES: usize = 1 << 20;
const VALUE_BYTES: usize = 60_000;

#[test]
fn a_snapshot_follows_log_bytes_when_entries_are_few() {
    let configs = TempDir::new("compaction-config");
    let config_of = |id: u64| {
        let path = configs.0.join(format!("node-{id}.toml"));
        // id, listen and data_dir are required in a file; the harness's flags override them.
        let text = format!(
            "id = {id}\nlisten = \"127.0.0.1:1\"\ndata_dir = \"unused\"\n\
             snapshot_every_entries = 1000000\nsnapshot_log_bytes = {LOG_BYTES}\n"
        );
        std::fs::write(&path, text).expect("write config");
        vec!["--config".to_string(), path.display().to_string()]
    };
    let mut c = TestCluster::start("compaction", 3, config_of);
    c.wait_leader(Duration::from_secs(20));

    // About 1.5 times the bound, in a few dozen entries.
    let value = "x".repeat(VALUE_BYTES);
    let puts = LOG_BYTES * 3 / 2 / VALUE_BYTES;
    for i in 0..puts {
        ok(&c.roster(&["kv", "put", &format!("big/{i}"), &value]));
    }
    for id in 1..=3 {
        eventually(Duration::from_secs(10), &format!("node {id} to snapshot by log bytes"), || {
            let log = c.log_of(id);
            (log.contains("log bytes since the last snapshot reached the bound") && log.contains("snapshot taken"))
                .then_some(())
        });
    }

    // A full restart comes back from the snapshot (and the log after it) with every value.
    for id in 1..=3 {
        c.stop(id);
    }
    for id in 1..=3 {
        c.spawn(id);
    }
    c.wait_leader(Duration::from_secs(20));
    for i in [0, puts / 2, puts - 1] {
        let got = c.kv_get_at(&c.endpoints(), &format!("big/{i}"), false);
        assert_eq!(got.as_deref().map(str::len), Some(VALUE_BYTES), "big/{i} after the restart");
    }
}
