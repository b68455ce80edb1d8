//! The rollout engine: a pure `decide(state, inputs) -> (state, actions)` over the lifecycle
//! `Deploy → ValidateHealth → Shadow → Canary(step) → Promote → Full`, or `Rollback → Previous`,
//! with `Paused` and pins from operators; and the gates whose verdicts drive it.
//!
//! `decide` does no I/O and reads no clock: the driver passes the time and the signals in and
//! executes the actions in order (traffic first, then persist, publish, cleanup).

mod decide;
mod driver;
mod gates;
mod live;
mod metrics;
mod stats;
mod store;

pub use decide::{
    decide, Action, Command, Health, Inputs, Phase, RolloutState, SyntheticState, AWAITING_APPROVAL,
};
pub use driver::{
    fingerprint, Condition, Driver, DriverHandle, ModelSignals, PairScorer, RolloutStatus,
    SignalSource, SyntheticRunner, TransitionHook,
};
pub use gates::{
    evaluate, Correctness, Dist, Evaluation, GateInputs, GateResult, VariantWindow, Verdict,
};
pub(crate) use live::{overlay, traffic};
pub use stats::{wilson, z_for};
pub use store::{StateStore, StoreError};
