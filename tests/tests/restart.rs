//! Restarts: a full cluster stop/start keeps every write; a node whose last WAL record is
//! torn (as by a crash mid-write) cuts it with a warning, starts, and catches up.

use roster_tests::{TestCluster, eventually, ok};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every `wal-*.log` segment under `dir`, sorted by name (so the last one is the active one).
fn wal_segments(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read data dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("wal-") && n.ends_with(".log"))
            {
                found.push(p);
            }
        }
    }
    found.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    found
}

/// Offsets and body lengths of the records in a WAL segment (log format 3): a 32-byte
/// segment header, then records of a 32-byte header (`"RWR3" | len: u32 LE | ...`), the
/// body and zero padding to 8, ended by a zeroed header (preallocated zeros) or the end of
/// the file.
fn record_offsets(bytes: &[u8]) -> Vec<(usize, usize)> {
    const HEADER: usize = 32;
    let mut out = Vec::new();
    let mut off = HEADER;
    while off + HEADER <= bytes.len() {
        let len = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().unwrap()) as usize;
        if &bytes[off..off + 4] != b"RWR3" || len == 0 || off + HEADER + len > bytes.len() {
            break;
        }
        out.push((off, len));
        off += (HEADER + len).div_ceil(8) * 8;
    }
    out
}

/// Damages the last record of the last segment (flips bytes of its body, so its checksum
/// fails) and appends garbage after it, as a crash in the middle of a write would.
fn tear_wal_tail(data_dir: &Path) -> PathBuf {
    let segs = wal_segments(data_dir);
    let last = segs.last().unwrap_or_else(|| panic!("no WAL segment under {}", data_dir.display())).clone();
    let mut bytes = std::fs::read(&last).expect("read segment");
    let records = record_offsets(&bytes);
    let (off, len) = *records.last().unwrap_or_else(|| panic!("no record in {}", last.display()));
    for b in &mut bytes[off + 32..off + 32 + len.min(4)] {
        *b ^= 0xA5;
    }
    let end = off + (32 + len).div_ceil(8) * 8;
    let garbage = [0xDEu8, 0xAD, 0xBE, 0xEF, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07];
    for (i, g) in garbage.iter().enumerate() {
        if end + i < bytes.len() {
            bytes[end + i] = *g;
        } else {
            bytes.push(*g);
        }
    }
    std::fs::write(&last, &bytes).expect("write damaged segment");
    last
}

#[test]
fn full_restart_keeps_data_and_torn_wal_tail_is_cut() {
    let mut c = TestCluster::start("restart", 3, |_| vec![]);
    c.wait_leader(Duration::from_secs(20));
    for i in 0..20 {
        ok(&c.roster(&["kv", "put", &format!("k{i}"), &format!("v{i}")]));
    }

    // Graceful stop of the whole cluster, then start it again on the same data.
    for id in 1..=3 {
        let st = c.stop(id);
        assert!(st.success(), "node {id} exited with {st:?} on SIGTERM\n{}", c.logs());
    }
    for id in 1..=3 {
        c.spawn(id);
    }
    c.wait_leader(Duration::from_secs(30));
    for i in 0..20 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        let got = eventually(Duration::from_secs(10), &format!("read of {k} after restart"), || {
            c.kv_lookup_at(&c.endpoints(), &k, false)
        });
        assert_eq!(got.as_deref(), Some(v.as_str()), "{k} lost across a full restart\n{}", c.logs());
    }

    // Crash a follower, tear its WAL tail, write more while it is down, restart it.
    let leader = c.leader();
    let victim = (1..=3).find(|id| *id != leader).expect("a follower");
    c.kill9(victim);
    let seg = tear_wal_tail(&c.data_dir(victim));
    let others: Vec<u64> = (1..=3).filter(|id| *id != victim).collect();
    let ep = c.endpoints_of(&others);
    for i in 0..20 {
        ok(&c.roster_at(&ep, &["kv", "put", &format!("k{i}"), &format!("w{i}")]));
    }
    ok(&c.roster_at(&ep, &["kv", "put", "after-crash", "yes"]));

    c.spawn(victim);
    let vep = c.endpoints_of(&[victim]);
    eventually(Duration::from_secs(20), "the restarted node to catch up", || {
        (c.kv_get_at(&vep, "after-crash", true).as_deref() == Some("yes")).then_some(())
    });
    for i in 0..20 {
        let (k, v) = (format!("k{i}"), format!("w{i}"));
        assert_eq!(c.kv_get_at(&vep, &k, true).as_deref(), Some(v.as_str()), "node {victim} has a stale {k}");
    }
    let log = c.log_of(victim);
    let seg_name = seg.file_name().unwrap().to_str().unwrap();
    assert!(
        log.lines().any(|l| l.contains("WAL tail torn") && l.contains(seg_name)),
        "node {victim}'s log does not mention cutting the torn tail of {seg_name}:\n{log}"
    );
    // It is a full member again: status through it alone reports a leader.
    let s = eventually(Duration::from_secs(10), "status through the restarted node", || c.status_at(&vep));
    assert!(s["leader"].is_u64(), "{s}");
}
