//! openraft's type configuration (`types`) and the log entry payload (`entry`): a batch
//! of the kernel's proposals and their results. Shared by storage, the network and the
//! server side; it knows none of them.

pub mod entry;
pub mod types;

pub use types::*;
