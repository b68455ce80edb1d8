//! Whether this worker thread is saturated: over the last 2–10 ms it was running, or runnable
//! and waiting for a CPU, at least 90 % of the time (and, once saturated, until that share falls
//! below 75 % for longer than a dip, or the worker has been quiet for a second). Mirrors are
//! optional work; while users' requests queue for the CPU a worker sheds most of them
//! (`shadow.saturated_sample`).
//!
//! Two clocks of the thread, both exact: its CPU time (`CLOCK_THREAD_CPUTIME_ID`) and the time it
//! spent runnable on a run queue (`/proc/thread-self/schedstat`, second field; the kernel adds a
//! wait when the thread gets the CPU, so read by the running thread it is current — the first
//! field, run time, lags by up to a scheduler tick, hence the CPU clock). A worker alone on its
//! core runs nearly all the time at saturation; one sharing the core with its upstream (the
//! comparison's setup, benches/compare) ran 65 % and waited 33 %: both read ≈ 1, where the same
//! worker at 5k req/s read 0.2–0.5 and at 20k (≈ 60 % of its capacity) 0.5–0.9 (200 ms windows).
//! Cgroup CPU throttling counts as waiting.
//!
//! Read at most every 2 ms and only when asked (a mirror is being sampled), so an idle worker
//! reads nothing; a reading is a `clock_gettime` and a `pread` of the open file, ≈ 1 µs
//! (`shadow/sampled_fresh_reading`): at most 0.05 % of a saturated worker. Where the file is
//! missing or reads `0 0 0` (not Linux, a kernel without `CONFIG_SCHED_INFO`), a worker is never
//! saturated.
//!
//! A verdict is only as good as its last reading, and every moment a saturated worker reads
//! calm it mirrors its whole sample, up to the in-flight bound at once. Session 21 traced every
//! reading of a worker at saturation in the comparison's alternating 250 ms slices of load
//! (`saturated_sample: 0%`, 11 s loaded): it read calm for 2.4 % of the time, in 59 spells — 43
//! at the start of a slice (the first reading after a quiet spell has nothing recent to compare
//! with, so the worker read calm until the next one 2 ms later) and 16 in dips (the load
//! generator stalled for a few milliseconds; the share fell below 75 % for 2–30 ms) — and
//! each spell let up to 64 mirrors through: ≈ 290 mirrors a second answered although none was
//! to be. So a saturated worker keeps its verdict through both: a dip below 75 % within 20 ms
//! of its last reading at 90 % or more ([`DIP`]), and a reading with nothing to compare with
//! within a second of it ([`IDLE`]); the same trace then read calm only before the first
//! saturated reading, and 50 mirrors were answered instead of 3,194. The cost of a wrong
//! verdict is one-sided: a worker that is in fact calm after a quiet spell sheds its sample
//! for the 2 ms until the next reading; one that leaves saturation sheds for at most 20 ms
//! more (a second, if its requests come more than 10 ms apart).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// A worker is saturated when it ran or waited to run for at least this share of the window...
const SATURATED: f64 = 0.9;
/// ...and stays so until the share falls below this. A worker sharing its core with its
/// upstream sleeps now and then while the upstream runs: of 376 windows of 10 ms in a saturated
/// run (the comparison's setup, sampled from outside), 9 read below 0.9 and 1 below 0.75, and
/// each dip let a burst of mirrors up to the in-flight bound through.
const CALM: f64 = 0.75;
/// A saturated worker whose share falls below [`CALM`] stays saturated until this long after
/// its last reading at or above [`SATURATED`].
const DIP: Duration = Duration::from_millis(20);
/// A saturated worker with no recent reading to compare with (it had no mirror to sample for a
/// [`WINDOW`]: idle, or stalled) stays saturated until this long after its last such reading.
const IDLE: Duration = Duration::from_secs(1);
/// Readings are at least this far apart.
const EVERY: Duration = Duration::from_millis(2);
/// The window: the span from the oldest reading at most this old to the newest.
const WINDOW: Duration = Duration::from_millis(10);

thread_local! {
    static WORKER: Load = Load::default();
}

#[cfg(test)]
thread_local! {
    static FORCED: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Whether the calling thread is saturated as of `now` (judged at most [`EVERY`] before).
pub(crate) fn saturated(now: Instant) -> bool {
    #[cfg(test)]
    if let Some(forced) = FORCED.get() {
        return forced;
    }
    WORKER.with(|load| load.saturated(now))
}

/// Tests: the calling thread reads as saturated (`Some(true)`), not (`Some(false)`), or as
/// measured (`None`).
#[cfg(test)]
pub(crate) fn force(saturated: Option<bool>) {
    FORCED.set(saturated);
}

#[derive(Default)]
struct Load {
    saturated: Cell<bool>,
    /// When a reading last found the share at or above [`SATURATED`]; `None` before one did.
    hot: Cell<Option<Instant>>,
    /// When the next reading is due; `None` before the first.
    due: Cell<Option<Instant>>,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    source: Source,
    window: Window,
}

#[derive(Default)]
enum Source {
    #[default]
    Unopened,
    Open(File),
    /// No scheduler statistics here: never saturated.
    Missing,
}

/// The readings within [`WINDOW`]: when, and the thread's run plus run-queue time by then.
#[derive(Debug, Default)]
struct Window(VecDeque<(Instant, Duration)>);

// === impl Load ===

impl Load {
    fn saturated(&self, now: Instant) -> bool {
        if self.due.get().is_some_and(|due| now < due) {
            return self.saturated.get();
        }
        self.due.set(Some(now + EVERY));
        let mut state = self.state.borrow_mut();
        let State { source, window } = &mut *state;
        if let Source::Unopened = source {
            *source =
                File::open("/proc/thread-self/schedstat").map_or(Source::Missing, Source::Open);
        }
        let share = match source {
            Source::Open(file) => match demand(file) {
                Some(busy) => window.push(now, busy),
                None => {
                    *source = Source::Missing;
                    None
                }
            },
            _ => None,
        };
        let since_hot = self.hot.get().map(|t| now.saturating_duration_since(t));
        let saturated = verdict(self.saturated.get(), share, since_hot);
        if share.is_some_and(|s| s >= SATURATED) {
            self.hot.set(Some(now));
        }
        self.saturated.set(saturated);
        saturated
    }
}

/// Saturated from a share of [`SATURATED`] on, until it falls below [`CALM`] more than [`DIP`]
/// after the last share at or above [`SATURATED`] (`since_hot`), or, without a share (no recent
/// reading to compare with), more than [`IDLE`] after it. Never saturated without such a share.
fn verdict(was: bool, share: Option<f64>, since_hot: Option<Duration>) -> bool {
    let held = |hold| since_hot.is_some_and(|t| t < hold);
    match share {
        Some(s) if s >= SATURATED => true,
        Some(s) if s >= CALM => was,
        Some(_) => was && held(DIP),
        None => was && held(IDLE),
    }
}

/// The thread's CPU time plus its time waiting on a run queue, from its `schedstat` file;
/// `None` when either clock cannot be read.
fn demand(schedstat: &File) -> Option<Duration> {
    let cpu = cpu_time::ThreadTime::try_now().ok()?.as_duration();
    let mut buf = [0u8; 80];
    let n = schedstat.read_at(&mut buf, 0).ok()?;
    run_delay(&buf[..n]).map(|waited| cpu + waited)
}

/// The second field of a `schedstat` line ("run_ns wait_ns slices"); `None` for an unreadable
/// line or a kernel that keeps no statistics ("0 0 0").
fn run_delay(line: &[u8]) -> Option<Duration> {
    let mut fields = std::str::from_utf8(line).ok()?.split_ascii_whitespace();
    let ran: u64 = fields.next()?.parse().ok()?;
    let waited: u64 = fields.next()?.parse().ok()?;
    (ran != 0 || waited != 0).then(|| Duration::from_nanos(waited))
}

// === impl Window ===

impl Window {
    /// Adds a reading; returns the share of the span since the oldest reading within
    /// [`WINDOW`] that the thread ran or waited to run, once there is such a span.
    fn push(&mut self, at: Instant, busy: Duration) -> Option<f64> {
        while self
            .0
            .front()
            .is_some_and(|&(t, _)| at.saturating_duration_since(t) > WINDOW)
        {
            self.0.pop_front();
        }
        self.0.push_back((at, busy));
        let &(since, before) = self.0.front()?;
        let span = at.checked_duration_since(since)?;
        (!span.is_zero()).then(|| busy.saturating_sub(before).as_secs_f64() / span.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_is_taken_over_the_last_10_ms() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut window = Window::default();
        // To a thousandth: the share is a ratio of floats.
        let mut w = |at, busy| window.push(at, busy).map(|s| (s * 1e3).round() / 1e3);
        assert_eq!(w(t0, ms(100)), None, "one reading is no span");
        // 2 ms later, 1 ms more run or wait: half.
        assert_eq!(w(t0 + ms(2), ms(101)), Some(0.5));
        // Busy for the next 8 ms: judged from the first reading, 9 of 10 ms.
        assert_eq!(w(t0 + ms(10), ms(109)), Some(0.9));
        // The first reading falls out of the window: 10 of 10 ms.
        assert_eq!(w(t0 + ms(12), ms(111)), Some(1.0));
        // After a quiet second the readings before it are out of the window: no span yet,
        // then the 2 ms since.
        assert_eq!(w(t0 + ms(1012), ms(112)), None);
        assert_eq!(w(t0 + ms(1014), ms(114)), Some(1.0));
    }

    #[test]
    fn saturation_begins_at_90_percent_and_ends_below_75() {
        let shares = [0.5, 0.89, 0.9, 0.8, 0.75, 0.74, 0.8, 0.95];
        let long_ago = Some(Duration::from_secs(5));
        let mut was = false;
        let verdicts: Vec<bool> = shares
            .iter()
            .map(|&s| {
                was = verdict(was, Some(s), long_ago);
                was
            })
            .collect();
        assert_eq!(
            verdicts,
            [false, false, true, true, true, false, false, true]
        );
        assert!(
            !verdict(false, None, None),
            "never saturated: not without a share"
        );
    }

    #[test]
    fn a_saturated_worker_holds_through_a_dip_and_a_quiet_spell() {
        let ms = Duration::from_millis;
        // A dip below 75 %: held for 20 ms after the last reading at 90 % or more.
        assert!(verdict(true, Some(0.3), Some(ms(19))));
        assert!(!verdict(true, Some(0.3), Some(ms(20))));
        // No recent reading to compare with: held for a second.
        assert!(verdict(true, None, Some(ms(250))));
        assert!(!verdict(true, None, Some(ms(1000))));
        // Only a saturated worker holds: a calm one stays calm in either.
        assert!(!verdict(false, Some(0.3), Some(ms(1))));
        assert!(!verdict(false, None, Some(ms(1))));
    }

    #[test]
    fn a_burst_after_a_quiet_spell_is_shed_from_its_first_request() {
        // Saturated, then 250 ms without a request (the comparison's alternating slices):
        // the next burst reads saturated before its first reading has anything to compare
        // with, where it used to mirror everything for 2 ms.
        let load = Load::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // The state a saturated reading at t0 leaves.
        load.saturated.set(true);
        load.hot.set(Some(t0));
        load.due.set(Some(t0 + EVERY));
        assert!(load.saturated(t0 + ms(250)), "held through the quiet spell");
        assert!(
            !load.saturated(t0 + ms(1251)),
            "a second after its last saturated reading, with nothing to compare with: calm"
        );
    }

    #[test]
    fn schedstat_lines_without_statistics_are_refused() {
        assert_eq!(
            run_delay(b"1234567 89012 42\n"),
            Some(Duration::from_nanos(89_012))
        );
        assert_eq!(run_delay(b"0 0 0\n"), None, "CONFIG_SCHED_INFO off");
        assert_eq!(run_delay(b"garbage"), None);
        assert_eq!(run_delay(b""), None);
    }

    /// A thread that never sleeps is saturated within a window, however the host shares its
    /// CPUs (waiting counts); one that mostly sleeps is not. Linux only: elsewhere there is no
    /// schedstat file and nothing is ever saturated.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_spinning_thread_is_saturated_and_a_sleeping_one_is_not() {
        let spinning = std::thread::spawn(|| {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(2) {
                if saturated(Instant::now()) && start.elapsed() > Duration::from_millis(30) {
                    return true;
                }
            }
            false
        });
        let sleeping = std::thread::spawn(|| {
            let mut ever = false;
            for _ in 0..40 {
                std::thread::sleep(Duration::from_millis(5));
                ever |= saturated(Instant::now());
            }
            ever
        });
        assert!(
            spinning.join().expect("no panic"),
            "a spinning thread read as saturated"
        );
        assert!(
            !sleeping.join().expect("no panic"),
            "a thread asleep nearly all the time never reads as saturated"
        );
    }
}
