//! When each request is due: open-loop arrival schedules (constant or Poisson) and closed-loop
//! turns, with warm-up and the end of the run, as one per-thread slot source.

use std::time::Duration;

use tokio::time::Instant;

/// How open-loop requests arrive.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Arrival {
    /// Evenly spaced, `1/rate` apart.
    #[default]
    Constant,
    /// Exponential gaps with mean `1/rate` (a Poisson process).
    Poisson,
}

/// The limits of a run: when it starts, when measuring starts, when it ends.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub start: Instant,
    /// Requests due before this are sent but not recorded.
    pub warm_end: Instant,
    /// No request is due at or after this (`None`: run until `limit` requests were measured).
    pub end: Option<Instant>,
    /// Measured requests this slot source hands out at most.
    pub limit: Option<u64>,
    /// Past this, open-loop slots are dropped (counted, not sent): the generator is too far
    /// behind to keep the schedule.
    pub give_up: Option<Instant>,
}

/// One request a worker is told to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Send at `due` (open loop: the intended time; closed loop: now). Latency counts from
    /// `due`, so a request sent late still carries the wait.
    Go { due: Instant, measured: bool },
    /// This slot was due but the generator gave up on it (counted as dropped when measured).
    Dropped { due: Instant, measured: bool },
    /// The run is over for this worker.
    Stop,
}

/// The slot source of one thread, shared by its workers.
#[derive(Debug)]
pub struct Slots {
    window: Window,
    kind: Kind,
    measured: u64,
}

#[derive(Debug)]
enum Kind {
    Open {
        arrival: Arrival,
        /// Mean gap between arrivals, in seconds.
        gap: f64,
        next: Instant,
        rng: fastrand::Rng,
    },
    Closed,
}

// === impl Slots ===

impl Slots {
    /// An open-loop source at `rate` requests per second; the first arrival is at
    /// `window.start + offset` (threads are offset so their constant schedules interleave).
    pub fn open(window: Window, arrival: Arrival, rate: f64, offset: Duration, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let gap = 1.0 / rate;
        let first = match arrival {
            Arrival::Constant => offset,
            Arrival::Poisson => offset + exp_gap(&mut rng, gap),
        };
        Self {
            window,
            kind: Kind::Open {
                arrival,
                gap,
                next: window.start + first,
                rng,
            },
            measured: 0,
        }
    }

    /// A closed-loop source: every worker sends again as soon as its last request ended.
    pub fn closed(window: Window) -> Self {
        Self {
            window,
            kind: Kind::Closed,
            measured: 0,
        }
    }

    /// The next slot for a worker that is free at `now`.
    pub fn take(&mut self, now: Instant) -> Slot {
        let due = match &mut self.kind {
            Kind::Open { next, .. } => *next,
            // A worker ready before the start waits for it.
            Kind::Closed => now.max(self.window.start),
        };
        if self.window.end.is_some_and(|end| due >= end) {
            return Slot::Stop;
        }
        let measured = due >= self.window.warm_end;
        if measured {
            if self.window.limit.is_some_and(|n| self.measured >= n) {
                return Slot::Stop;
            }
            self.measured += 1;
        }
        if let Kind::Open {
            arrival,
            gap,
            next,
            rng,
        } = &mut self.kind
        {
            *next += match arrival {
                Arrival::Constant => Duration::from_secs_f64(*gap),
                Arrival::Poisson => exp_gap(rng, *gap),
            };
            if self.window.give_up.is_some_and(|g| now > g) {
                return Slot::Dropped { due, measured };
            }
        }
        Slot::Go { due, measured }
    }
}

/// An exponential draw with mean `mean` seconds.
fn exp_gap(rng: &mut fastrand::Rng, mean: f64) -> Duration {
    // 1 - u is in (0, 1], so the logarithm is finite.
    let u = 1.0 - rng.f64();
    Duration::from_secs_f64(-u.ln() * mean)
}

/// How much of `[from, to)` falls in target 0's and target 1's slices, when slices of length
/// `slice` alternate from `start` (target 0 first). A zero `slice` (no comparison) gives it all
/// to target 0.
pub fn slice_shares(start: Instant, slice: Duration, from: Instant, to: Instant) -> [Duration; 2] {
    let total = to.saturating_duration_since(from);
    if slice.is_zero() {
        return [total, Duration::ZERO];
    }
    let mut shares = [Duration::ZERO; 2];
    let mut t = from;
    while t < to {
        let since = t.saturating_duration_since(start);
        let index = since.as_nanos() / slice.as_nanos();
        let slice_end = start + slice * u32::try_from(index + 1).unwrap_or(u32::MAX);
        let until = slice_end.min(to);
        shares[(index % 2) as usize] += until - t;
        t = until;
    }
    shares
}

/// Which target a request due at `due` goes to, when slices of `slice` alternate from `start`.
pub fn target_of(start: Instant, slice: Duration, due: Instant) -> usize {
    if slice.is_zero() {
        return 0;
    }
    let since = due.saturating_duration_since(start);
    ((since.as_nanos() / slice.as_nanos()) % 2) as usize
}
