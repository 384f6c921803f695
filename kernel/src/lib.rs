//! Roster's kernel: every cluster rule as a pure, sans-IO state machine.
//!
//! Nothing here reads a clock, touches a socket or a file, spawns, or draws unseeded
//! randomness. Time comes in as `now_ms` (a monotonic millisecond count the driver
//! supplies); randomness as a seed. Both drivers (the real node and the simulator) run
//! exactly this code.

pub mod authority;
pub mod codec;
pub mod command;
pub mod event;
pub mod expiry_guard;
pub mod formation;
pub mod ids;
pub mod leader_duties;
pub mod leader_search;
pub mod liveness;
pub mod membership;
pub mod model;
pub mod placement;
pub mod query;
pub mod readiness;
pub mod redirect;
pub mod resource_window;
pub mod retry_queue;
pub mod rng;
pub mod state_machine;
pub mod vote_gate;

pub use authority::{Action, Principal, authorize};
pub use command::*;
pub use event::*;
pub use expiry_guard::{BrakeAlarm, ExpiryGuardConfig, ExpiryGuardConfigError, ExpiryGuardStatus};
pub use ids::*;
pub use leader_duties::{
    DutiesConfig, DutiesConfigError, DutyProposal, HeartbeatVerdict, LeaderDuties, Lease, MemberRecord, ProposalId,
    ProposalOutcome, ResourcePolicy, Role,
};
pub use liveness::{Liveness, LivenessConfig, LivenessConfigError, UnknownMember};
pub use model::*;
pub use placement::{PlacementError, Requirements};
pub use query::*;
pub use resource_window::{ResourceWindow, SampleError, WindowConfigError};
pub use retry_queue::{EndpointId, QueueFull, RetryConfig, RetryConfigError, RetryQueue};
pub use state_machine::{
    ClusterStateMachine, DEFAULT_STATE_BUDGET_BYTES, EventsCompacted, Limits, SnapshotError, StateBytes, StateUsage,
    UnsealedSnapshot,
};
