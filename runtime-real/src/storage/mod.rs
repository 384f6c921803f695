//! Durable storage: the Raft log (own WAL), vote, committed index and snapshots, over a
//! `Disk` trait so the simulator can plug in a simulated disk.
