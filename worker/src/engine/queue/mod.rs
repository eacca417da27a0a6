//! All delivery-queue SQL: one function per statement, each stating its locking and fencing
//! invariant. This module makes no decisions; `attempt` and `retry` do.
//!
//! Invariants:
//! - A claim commits before any HTTP request is made; no transaction is ever open during HTTP.
//! - Every claim and every lease reap bumps `lease_token`. A completion presents the token it was
//!   claimed with and applies only to a row still `running` under that token, so a stale worker
//!   (its lease expired and was reaped or re-claimed) can never overwrite a newer attempt.
//!
//! [`claim`] leases, [`complete`] writes results, [`schedule`] reaps and reschedules. The circuit's
//! statements live with the circuit (`engine::circuit`).

mod claim;
mod complete;
mod schedule;

pub use self::claim::{
    Claim, Claimed, ClaimedDelivery, Held, Room, ScanFrom, ScanPosition, claim_batch, claim_batch_from, claim_resuming,
    claim_window,
};
pub use self::complete::{Completed, complete_batch, defer_reopened_backlog};
pub use self::schedule::{Spread, next_due, reap_expired_leases, spread_backlog, unpark_resumed};

/// Every statement of this module, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] = &[
    ("claim_batch", claim::CLAIM_BATCH),
    ("complete_batch", complete::COMPLETE_BATCH),
    ("complete_delivered", complete::COMPLETE_DELIVERED),
    ("defer_reopened_backlog", complete::DEFER_REOPENED_BACKLOG),
    ("reap_expired_leases", schedule::REAP_EXPIRED_LEASES),
    ("unpark_resumed", schedule::UNPARK_RESUMED),
    ("spread_backlog", schedule::SPREAD_BACKLOG),
    ("next_due", schedule::NEXT_DUE),
];
