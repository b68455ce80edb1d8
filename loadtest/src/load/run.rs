//! Runs a plan: one OS thread per `--threads`, each with a current-thread runtime, its share of
//! connections (opened before the clock starts: a failure there is a setup error) and of the
//! rate; the main thread merges interval histograms and prints the progress line.

use std::{io::Write as _, rc::Rc, sync::mpsc, thread, time::Duration};

use anyhow::{anyhow, Context as _};
use tokio::{sync::watch, task::LocalSet, time::Instant};

use super::{
    client::{Conn, HttpExchange, Shared},
    engine::{drive, Pair, Setup},
    schedule::{slice_shares, Slots, Window},
    stats::{Percentiles, Recorder, Span},
    Mode, Plan,
};

/// Progress and interval hand-over period.
const TICK: Duration = Duration::from_secs(1);
/// Interval hand-overs that may wait for the main thread (a full queue delays, never drops).
const INTERVAL_QUEUE: usize = 16;
/// Head start between "go" and the first due time, so every thread is awake for it.
const START_DELAY: Duration = Duration::from_millis(20);

/// What a run measured.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Per target (the second only with `--compare`).
    pub recorders: Pair,
    /// Measured time each target had (its slices within the measured window).
    pub measured: [Duration; 2],
}

#[derive(Clone, Copy, Debug)]
enum Go {
    Wait,
    Start(Instant),
    Abort,
}

type ThreadResult = anyhow::Result<Pair>;

// === impl Outcome ===

impl Outcome {
    /// The outcome of a run that started at `start`. The measured time is each target's share
    /// of the duration after the warm-up; when the target fell behind, the requests due in the
    /// window went out until the last backlog request was sent, so the time stretches to then,
    /// each target's share in proportion. With `--requests`: until the last request ended.
    pub(super) fn new(plan: &Plan, start: Instant, recorders: Pair) -> Self {
        let warm_end = start + plan.warmup;
        let latest = |at: fn(&Recorder) -> Option<Instant>| recorders.iter().filter_map(at).max();
        let measured = match plan.duration {
            Some(d) => {
                let shares = slice_shares(start, plan.slice, warm_end, warm_end + d);
                let sent_until = latest(|r| r.last_backlog).unwrap_or(warm_end);
                let stretch =
                    sent_until.saturating_duration_since(warm_end).as_secs_f64() / d.as_secs_f64();
                shares.map(|s| s.mul_f64(stretch.max(1.0)))
            }
            None => {
                let end = latest(|r| r.last_end).unwrap_or(warm_end);
                slice_shares(start, plan.slice, warm_end, end)
            }
        };
        Self {
            recorders,
            measured,
        }
    }
}

/// Runs the plan to its end; `progress` prints a line on stderr every second.
pub(crate) fn execute(plan: &Plan, progress: bool) -> anyhow::Result<Outcome> {
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let (data_tx, data_rx) = mpsc::sync_channel::<Pair>(INTERVAL_QUEUE);
    let (go_tx, go_rx) = watch::channel(Go::Wait);
    let mut handles = Vec::new();
    for index in 0..plan.threads {
        let (plan, ready_tx, data_tx, go_rx) = (
            plan.clone(),
            ready_tx.clone(),
            data_tx.clone(),
            go_rx.clone(),
        );
        let handle = thread::Builder::new()
            .name(format!("loadtest-{index}"))
            .spawn(move || generator(index, &plan, ready_tx, data_tx, go_rx))
            .context("cannot start a generator thread")?;
        handles.push(handle);
    }
    drop((ready_tx, data_tx));
    let mut problems = Vec::new();
    for _ in 0..plan.threads {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(e),
            Err(_) => problems.push("a generator thread died during setup".to_owned()),
        }
    }
    if !problems.is_empty() {
        // Threads that are gone do not need the signal.
        let _ = go_tx.send(Go::Abort);
        problems.sort();
        problems.dedup();
        return Err(anyhow!("setup failed:\n  {}", problems.join("\n  ")));
    }
    let start = Instant::now() + START_DELAY;
    let _ = go_tx.send(Go::Start(start));
    let mut total = Pair::default();
    let mut printer = progress.then(|| Progress::new(plan, start));
    while !handles.iter().all(|h| h.is_finished()) {
        match data_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(interval) => merge(&mut total, &interval),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some(p) = &mut printer {
            p.maybe_print(&total);
        }
    }
    while let Ok(interval) = data_rx.try_recv() {
        merge(&mut total, &interval);
    }
    for h in handles {
        let last = h
            .join()
            .map_err(|_| anyhow!("a generator thread panicked"))??;
        merge(&mut total, &last);
    }
    Ok(Outcome::new(plan, start, total))
}

fn merge(total: &mut Pair, interval: &Pair) {
    for (t, i) in total.iter_mut().zip(interval) {
        t.merge(i);
    }
}

/// Body of one generator thread.
fn generator(
    index: usize,
    plan: &Plan,
    // Owned and dropped once answered, so a thread that dies in setup ends the main thread's
    // wait instead of leaving it waiting for an answer that never comes.
    ready: mpsc::Sender<Result<(), String>>,
    data: mpsc::SyncSender<Pair>,
    mut go: watch::Receiver<Go>,
) -> ThreadResult {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            // The main thread waits for this answer; if it is gone there is nobody to tell.
            let _ = ready.send(Err(format!("cannot start a runtime: {e}")));
            return Err(e.into());
        }
    };
    LocalSet::new().block_on(&rt, async move {
        let connected = connect(index, plan).await;
        // The main thread waits for this answer; if it is gone there is nobody to tell.
        let _ = ready.send(connected.as_ref().map(|_| ()).map_err(Clone::clone));
        drop(ready);
        let exchanges = connected.map_err(|e| anyhow!(e))?;
        let start = match *go.wait_for(|g| !matches!(g, Go::Wait)).await? {
            Go::Start(start) => start,
            _ => return Ok(Pair::default()),
        };
        let slots = slots_for(index, plan, start);
        Ok(drive(exchanges, slots, setup_for(plan, start, TICK), data).await)
    })
}

/// Opens this thread's connections (to every target) and makes its workers.
async fn connect(index: usize, plan: &Plan) -> Result<Vec<HttpExchange>, String> {
    let shared = Rc::new(Shared {
        targets: plan.targets.clone(),
        template: plan.request.clone(),
        h2c: plan.h2c,
        timeout: plan.timeout,
    });
    let mut workers = Vec::new();
    for c in (index..plan.connections).step_by(plan.threads) {
        let mut conns = [None, None];
        for (i, target) in plan.targets.iter().enumerate() {
            let open = tokio::time::timeout(plan.timeout, Conn::open(target, plan.h2c));
            conns[i] = Some(match open.await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return Err(format!("cannot connect to {}: {e}", target.url)),
                Err(_) => return Err(format!("connecting to {} timed out", target.url)),
            });
        }
        for s in 1..plan.streams {
            // More than one stream per connection is only allowed with h2c, which shares.
            let shared_conns = [0, 1].map(|i| conns[i].as_ref().and_then(Conn::share));
            workers.push(HttpExchange::new(
                shared.clone(),
                shared_conns,
                c * plan.streams + s,
            ));
        }
        workers.push(HttpExchange::new(shared.clone(), conns, c * plan.streams));
    }
    Ok(workers)
}

/// How a thread's workers pick targets, pace and count, for a run that starts at `start`.
pub(super) fn setup_for(plan: &Plan, start: Instant, tick: Duration) -> Setup {
    let warm_end = start + plan.warmup;
    Setup {
        start,
        slice: plan.slice,
        closed: plan.mode == Mode::Closed,
        spin: plan.spin,
        tick,
        span: Span {
            from: warm_end,
            until: plan.duration.map(|d| warm_end + d),
        },
        // Without `--slo` nothing is judged, and goodput is not reported.
        slo: plan.slo.unwrap_or_default(),
    }
}

/// Thread `index`'s share of the schedule.
pub(super) fn slots_for(index: usize, plan: &Plan, start: Instant) -> Slots {
    let threads = plan.threads as u64;
    let i = index as u64;
    let warm_end = start + plan.warmup;
    let end = plan.duration.map(|d| warm_end + d);
    let limit = plan
        .requests
        .map(|n| n / threads + u64::from(i < n % threads));
    let window = Window {
        start,
        warm_end,
        end,
        limit,
        // Requests due in the window are still sent after it (the backlog, so that its latency
        // is measured) for up to one timeout; later ones are dropped.
        give_up: end.map(|e| e + plan.timeout),
    };
    match plan.mode {
        Mode::Open { rate, arrival } => {
            let share = rate / plan.threads as f64;
            // Constant schedules of the threads interleave instead of firing together.
            let offset = Duration::from_secs_f64(index as f64 / rate);
            Slots::open(window, arrival, share, offset, plan.seed.wrapping_add(i))
        }
        Mode::Closed => Slots::closed(window),
    }
}

/// The live line on stderr.
struct Progress {
    start: Instant,
    warm_end: Instant,
    /// End of the measured window (`None` with `--requests`).
    end: Option<Instant>,
    next: Instant,
    last: Instant,
    last_completed: u64,
    target_rate: Option<f64>,
    compare: bool,
}

// === impl Progress ===

impl Progress {
    fn new(plan: &Plan, start: Instant) -> Self {
        Self {
            start,
            warm_end: start + plan.warmup,
            end: plan.duration.map(|d| start + plan.warmup + d),
            next: start + TICK,
            last: start,
            last_completed: 0,
            target_rate: match plan.mode {
                Mode::Open { rate, .. } => Some(rate),
                Mode::Closed => None,
            },
            compare: plan.targets.len() > 1,
        }
    }

    fn maybe_print(&mut self, total: &Pair) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        let completed: u64 = total.iter().map(Recorder::taken).sum();
        let rate = (completed - self.last_completed) as f64 / (now - self.last).as_secs_f64();
        self.last_completed = completed;
        self.last = now;
        self.next = now + TICK;
        let mut line = format!("[{:>5.1}s] ", (now - self.start).as_secs_f64());
        if now < self.warm_end {
            line.push_str("warming up");
        } else {
            line.push_str(&format!("{rate:>9.0} req/s"));
            if let Some(target) = self.target_rate {
                line.push_str(&format!(" (target {target:.0})"));
            }
            if self.end.is_some_and(|end| now >= end) {
                line.push_str(" after the window, draining");
            }
            let names = if self.compare { ["A ", "B "] } else { ["", ""] };
            for (name, rec) in names.iter().zip(total).take(1 + usize::from(self.compare)) {
                let p = Percentiles::of(&rec.total);
                line.push_str(&format!(
                    "  {name}p50 {} p99 {}  errors {}",
                    super::report::fmt_us(p.p50),
                    super::report::fmt_us(p.p99),
                    rec.errors.total()
                ));
            }
        }
        // A closed stderr only loses the progress line.
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}
