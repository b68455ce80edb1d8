//! One generator thread: workers that take slots from the thread's schedule, wait for each
//! slot's due time, send, and record latency from the due time (not from when the send really
//! happened), plus a ticker that hands interval histograms to the main thread.

use std::{cell::RefCell, rc::Rc, sync::mpsc, time::Duration};

use tokio::time::{sleep, sleep_until, Instant};

use super::{
    schedule::{target_of, Slot, Slots},
    slo::Slo,
    stats::{ErrorKind, Recorder, Sample, Span},
};

/// Pause after a failed connect in closed loop, so a dead target is not hammered in a spin.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// The resolution of tokio's timer wheel.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

/// Recorders of target A and target B (B unused without `--compare`).
pub(crate) type Pair = [Recorder; 2];

/// Sends one request and fills in its sample.
pub(crate) trait Exchange {
    /// Sends one request to target 0 or 1; sets `s.error` on failure.
    async fn exchange(&mut self, target: usize, s: &mut Sample);
}

/// How a thread's workers pick targets and report.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Setup {
    /// Start of the alternating slices and their length (zero: target 0 only).
    pub start: Instant,
    pub slice: Duration,
    pub closed: bool,
    /// Busy-wait (yielding) the last millisecond before each due time instead of relying on
    /// the 1 ms timer alone.
    pub spin: bool,
    /// How often interval recorders go to the main thread.
    pub tick: Duration,
    /// The measured window, to place requests sent after their due time.
    pub span: Span,
    /// What a good request meets (`--slo`).
    pub slo: Slo,
}

/// Runs `exchanges` (one per worker) on the current `LocalSet` until the slots run out, sending
/// interval recorders on `tx` every tick; returns what the last interval recorded.
pub(crate) async fn drive<E: Exchange + 'static>(
    exchanges: Vec<E>,
    slots: Slots,
    setup: Setup,
    tx: mpsc::SyncSender<Pair>,
) -> Pair {
    let slots = Rc::new(RefCell::new(slots));
    let rec: Rc<RefCell<Pair>> = Rc::default();
    let workers: Vec<_> = exchanges
        .into_iter()
        .map(|ex| tokio::task::spawn_local(worker(ex, slots.clone(), rec.clone(), setup)))
        .collect();
    let ticker = {
        let rec = rec.clone();
        tokio::task::spawn_local(async move {
            let mut at = Instant::now();
            loop {
                at += setup.tick;
                sleep_until(at).await;
                let interval = rec.borrow().clone();
                match tx.try_send(interval) {
                    Ok(()) => rec.borrow_mut().iter_mut().for_each(Recorder::reset),
                    // The main thread is behind: keep accumulating and hand it all over next
                    // tick, so the queue stays bounded and nothing is lost.
                    Err(mpsc::TrySendError::Full(_)) => {}
                    Err(mpsc::TrySendError::Disconnected(_)) => return,
                }
            }
        })
    };
    for w in workers {
        // A worker that panicked recorded nothing more; the others' results still stand.
        let _ = w.await;
    }
    ticker.abort();
    let last = rec.borrow().clone();
    last
}

async fn worker<E: Exchange>(
    mut ex: E,
    slots: Rc<RefCell<Slots>>,
    rec: Rc<RefCell<Pair>>,
    setup: Setup,
) {
    let mut sample = Sample::default();
    loop {
        let slot = slots.borrow_mut().take(Instant::now());
        let (due, measured) = match slot {
            Slot::Stop => return,
            Slot::Dropped { due, measured } => {
                if measured {
                    rec.borrow_mut()[target_of(setup.start, setup.slice, due)].dropped += 1;
                }
                continue;
            }
            Slot::Go { due, measured } => (due, measured),
        };
        // Due before this worker was free: it waited for a connection (open loop only; a
        // closed-loop slot is due when the worker asks).
        let queued = !setup.closed && Instant::now() >= due;
        let from = start_time(due, setup.spin).await;
        let sent = Instant::now();
        let target = target_of(setup.start, setup.slice, due);
        sample.reset();
        ex.exchange(target, &mut sample).await;
        {
            let r = &mut rec.borrow_mut()[target];
            r.sent(sent, queued, measured, setup.span);
            if measured {
                r.record(from, Instant::now(), &sample, &setup.slo);
            }
        }
        if setup.closed && sample.error == Some(ErrorKind::Connect) {
            sleep(CONNECT_BACKOFF).await;
        }
    }
}

/// Waits for `due` and returns the instant latency counts from.
///
/// A worker that is free only after `due` (every connection was busy: the target is behind)
/// sends at once and counts from `due`, so the wait the target caused is in the latency (the
/// coordinated-omission correction). A worker free before `due` sleeps and counts from when it
/// woke: the timer's lateness (tokio's wheel has 1 ms resolution) is the generator's, not the
/// target's.
async fn start_time(due: Instant, spin: bool) -> Instant {
    let now = Instant::now();
    if now >= due {
        return due;
    }
    if spin {
        if due - now > TIMER_RESOLUTION {
            sleep_until(due - TIMER_RESOLUTION).await;
        }
        while Instant::now() < due {
            tokio::task::yield_now().await;
        }
    } else {
        sleep_until(due).await;
    }
    Instant::now()
}
