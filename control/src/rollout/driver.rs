//! The driver: ticks (and wakes early on demand), reads signals (concurrently, off the step,
//! waited for a bounded time), evaluates gates over each phase's window, calls `decide`, and
//! executes the actions in order — traffic (one snapshot swap for every model the step moved),
//! then persist (one save), then publish, then cleanup.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rollgate_config::{Config, Model, Ppm};
use rollgate_proxy::{Directive, ModelObservation, ProxyHandle, ShadowPair};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};

use super::decide::{decide, Action, Command, Health, Inputs, Phase, RolloutState, SyntheticState};
use super::gates::{evaluate, Correctness, Evaluation, GateInputs, VariantWindow};
use super::live::Statuses;
use super::store::StateStore;

/// Shortest gap between evaluations woken by candidate failures: fast enough to zero the weight
/// well within a second of a breach, cheap enough under a storm of errors.
const BREACH_MIN_GAP: Duration = Duration::from_millis(100);
/// Commands waiting for the next step, bounded (operators do not send thousands).
const COMMAND_QUEUE: usize = 64;
/// Longest a step waits for the signal reads it started (health, engine metrics, PromQL: a few
/// HTTP requests per model, run concurrently) before evaluating with the latest readings it
/// has. Reads take milliseconds; one that hangs (a candidate's `/metrics` that never answers
/// until its 2 s timeout) no longer holds every other model's evaluation, breaches included.
const READ_WAIT: Duration = Duration::from_millis(250);
/// Signal reads in flight at once, across models.
const READS_IN_FLIGHT: usize = 64;
/// How often shadow pairs are scored between steps (see [`Driver::score_pairs`]).
const SCORE_INTERVAL: Duration = Duration::from_millis(100);
/// Longest the scorer works before it pauses for [`SCORE_PAUSE`] (it checks between pairs, so a
/// slice may run one pair over: a small pair is ≈ 5 µs, two 500-token streams ≈ 2.5 ms).
const SCORE_SLICE: Duration = Duration::from_micros(500);
/// The scorer's pause between slices (the timer's resolution: a millisecond).
const SCORE_PAUSE: Duration = Duration::from_millis(1);
/// Scoring time one batch may take, pauses not counted: with a batch every [`SCORE_INTERVAL`],
/// at most 5 % of a core. Small answers never reach it (64 pairs ≈ 0.3 ms); long streamed ones
/// do (≈ 2.5 ms a pair of 500-token streams, 64 of them 160 ms), and the pairs left are dropped
/// and counted (`rollgate_proxy_shadow_pairs_unscored_total`) rather than taking the core the
/// workers need.
const SCORE_BUDGET: Duration = Duration::from_millis(5);
/// Models a step evaluates between two yields to the runtime: shutdown and the admin API wait
/// at most this many (≈ 1 ms of work) even while a reload has every model evaluated again.
const YIELD_EVERY: usize = 1024;

/// What the driver reads about a candidate besides the data plane's observations.
#[derive(Clone, Debug)]
pub struct ModelSignals {
    pub health: Health,
    /// PromQL gate values by query name.
    pub promql: Vec<(String, Result<f64, String>)>,
    pub queue_time: Result<Option<super::gates::Dist>, String>,
    pub gpu_memory: Result<Option<f64>, String>,
}

/// Reads engine metrics, GPU memory and health for a model's candidate.
pub trait SignalSource: Send + Sync + 'static {
    fn read<'a>(
        &'a self,
        model: &'a Model,
    ) -> Pin<Box<dyn Future<Output = ModelSignals> + Send + 'a>>;
}

/// Scores a shadow pair in `0..=1`; `None` when not comparable. Pairs agree when the score
/// reaches `scoring::DEFAULT_PAIR_THRESHOLD`.
pub type PairScorer = Arc<dyn Fn(&ShadowPair) -> Option<f64> + Send + Sync>;

/// Per-model counters the metrics collector reads: shadow pair scores and synthetic runs.
#[derive(Debug, Default)]
pub(crate) struct Tallies {
    /// Non-cumulative counts per bucket of `scoring::SCORE_BUCKETS`, their sum, and the pairs
    /// that could not be compared.
    pub(crate) scores: [u64; crate::scoring::SCORE_BUCKETS.len()],
    pub(crate) score_sum: f64,
    pub(crate) not_comparable: u64,
    pub(crate) synthetic_passed: u64,
    pub(crate) synthetic_failed: u64,
}

pub(crate) type SharedTallies = Arc<Mutex<BTreeMap<String, Tallies>>>;

/// Runs a model's synthetic suite against its candidate.
pub type SyntheticRunner =
    Arc<dyn Fn(Model) -> Pin<Box<dyn Future<Output = SyntheticState> + Send>> + Send + Sync>;

/// Called after a step in which any model's phase changed, with the evaluated config's revision
/// and every model's status (the Git notes writer). Must not block.
pub type TransitionHook = Arc<dyn Fn(&str, &[RolloutStatus]) + Send + Sync>;

/// The status of one model's rollout, as `/status` and the publishers show it.
#[derive(Clone, Debug, Serialize)]
pub struct RolloutStatus {
    pub model: String,
    pub candidate: Option<String>,
    /// The config revision (Git commit) that started the candidate's rollout.
    pub started_revision: Option<String>,
    /// What the candidate changes relative to stable: `artifact`, `runtime`,
    /// `artifact+runtime` or `revision` (neither). None until the model's config is seen.
    pub change: Option<&'static str>,
    #[serde(flatten)]
    pub phase: Phase,
    pub paused: Option<String>,
    pub pinned: Option<String>,
    pub weight: String,
    pub mirror: String,
    pub reason: String,
    pub since_unix_ms: u64,
    pub gates: Option<Evaluation>,
    /// The gate values behind the last transition.
    pub transition_gates: Option<Evaluation>,
    /// kstatus-style conditions: `Ready`, `Reconciling`, `Stalled`.
    pub conditions: Vec<Condition>,
}

/// A kstatus-style condition: `reason` is a CamelCase token a tool can match on (the phase,
/// or why the rollout is held), `message` the words.
#[derive(Clone, Debug, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// What the driver answers an operator command with: applied, or refused and why (nothing
/// changed).
pub type Applied = Result<(), String>;

/// An operator command for one model, with the sender told once the step applying (or
/// refusing) it has published its status.
type Queued = (String, Command, oneshot::Sender<Applied>);

/// Sends operator commands to the driver and reads status. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DriverHandle {
    commands: mpsc::Sender<Queued>,
    wake: Arc<Notify>,
    stepped: Arc<Notify>,
    status: Statuses,
    /// When each rollout restored from the state file entered its phase (unix ms): a status
    /// still at that time restates a transition made before this process started.
    restored: Arc<BTreeMap<String, u64>>,
}

pub struct Driver {
    proxy: ProxyHandle,
    store: StateStore,
    signals: Arc<dyn SignalSource>,
    scorer: PairScorer,
    synthetic: SyntheticRunner,
    tick: Duration,
    runs: HashMap<String, Run>,
    commands: mpsc::Receiver<Queued>,
    /// Commands not applied yet, in arrival order per model: a step applies one per model (the
    /// decision takes one), so two sent between steps are both applied, in order.
    pending: HashMap<String, VecDeque<(Command, oneshot::Sender<Applied>)>>,
    /// Answers for the commands the current step took, sent after it published.
    applied: Vec<(oneshot::Sender<Applied>, Applied)>,
    wake: Arc<Notify>,
    stepped: Arc<Notify>,
    tallies: SharedTallies,
    status: Statuses,
    on_transition: Option<TransitionHook>,
    known: Known,
    reads: Reads,
    outbox: Outbox,
}

/// What a step's decisions do beyond the model's own state, gathered and done together at
/// [`Driver::flush`] in the contract's order — traffic, persist, publish, cleanup — so a step
/// that moves many rollouts (a fleet-wide change) swaps the data plane's routes once and
/// writes the state file once, instead of once per model each (a rebuild of every route and
/// two fsyncs of every model's state per transition).
#[derive(Default)]
struct Outbox {
    traffic: Vec<(String, Option<Directive>)>,
    persist: bool,
    /// Positions (in the config) of models whose status waits for the traffic and the save.
    publish: Vec<usize>,
    cleanup: Vec<String>,
}

/// Signal reads run as their own tasks, off the step: a step starts one per model with a
/// rollout (unless one is still in flight), waits up to [`READ_WAIT`] for them, and evaluates
/// each model with its latest reading taken for the model's current config.
struct Reads {
    /// The latest reading per model, with the model config it was taken for.
    latest: HashMap<String, (Model, ModelSignals)>,
    /// Models with a read in flight.
    inflight: HashSet<String>,
    /// Finished reads. Unbounded, yet holds at most one per model: a model has one read in
    /// flight at a time.
    done_tx: mpsc::UnboundedSender<(Model, ModelSignals)>,
    done_rx: mpsc::UnboundedReceiver<(Model, ModelSignals)>,
    limit: Arc<Semaphore>,
}

/// The serving config the driver last prepared for, its models by name: a lookup per pair and
/// per command, where a scan of every model per model made an idle gateway with 5,000 models
/// take 72 % of a core; and the models a step still has to evaluate.
#[derive(Default)]
struct Known {
    config: Option<Arc<Config>>,
    /// Each model's position in the config.
    index: HashMap<String, usize>,
    /// Bumped on every new config; a model settled under an older one is evaluated again.
    generation: u64,
    /// Positions of the models not settled after the last whole step under this config (those
    /// with a rollout, mostly); `None` until one completed.
    unsettled: Option<Vec<usize>>,
}

/// One model's live bookkeeping; only `state` is persisted.
struct Run {
    state: RolloutState,
    baseline: Option<ModelObservation>,
    correctness: Correctness,
    synthetic: Arc<Mutex<SyntheticState>>,
    /// When the suite last started, for the periodic runs during Shadow and Canary.
    synthetic_at: Option<tokio::time::Instant>,
    last_eval: Option<Evaluation>,
    /// The evaluation behind the last transition (what the demo and events show).
    transition_eval: Option<Evaluation>,
    /// The config generation under which the last evaluation of a model without a rollout
    /// changed nothing: the next one would change nothing either (see [`Driver::step`]).
    settled: Option<u64>,
}

/// Paces one batch of scoring: work in slices of [`SCORE_SLICE`], pause between them, stop
/// after [`SCORE_BUDGET`] of work (wall-clock time, pauses excluded).
#[derive(Debug)]
struct ScorePace {
    start: std::time::Instant,
    slice: std::time::Instant,
    paused: Duration,
}

#[derive(Debug, PartialEq, Eq)]
enum Pace {
    Go,
    Pause,
    Stop,
}

impl ScorePace {
    fn new(now: std::time::Instant) -> Self {
        ScorePace {
            start: now,
            slice: now,
            paused: Duration::ZERO,
        }
    }

    /// What to do before the next pair.
    fn next(&self, now: std::time::Instant) -> Pace {
        let worked = now.duration_since(self.start).saturating_sub(self.paused);
        if worked >= SCORE_BUDGET {
            Pace::Stop
        } else if now.duration_since(self.slice) >= SCORE_SLICE {
            Pace::Pause
        } else {
            Pace::Go
        }
    }

    /// A pause that began at `at` ended at `now`: a new slice starts.
    fn resumed(&mut self, at: std::time::Instant, now: std::time::Instant) {
        self.paused += now.duration_since(at);
        self.slice = now;
    }
}

// === impl Driver ===

impl Driver {
    pub fn new(
        proxy: ProxyHandle,
        store: StateStore,
        signals: Arc<dyn SignalSource>,
        scorer: PairScorer,
        synthetic: SyntheticRunner,
        tick: Duration,
    ) -> (Driver, DriverHandle) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let wake = Arc::new(Notify::new());
        let status = Statuses::new(proxy.clone());
        let saved = store.load().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read saved rollout state; starting fresh");
            BTreeMap::new()
        });
        let runs: HashMap<String, Run> = saved
            .into_iter()
            .map(|(m, state)| (m, Run::new(state)))
            .collect();
        // Restored rollouts are visible in /status from the start.
        status.update(|s| s.extend(runs.iter().map(|(m, r)| (m.clone(), status_of(m, None, r)))));
        let stepped = Arc::new(Notify::new());
        let restored = (runs.iter())
            .map(|(m, r)| (m.clone(), r.state.entered_ms))
            .collect();
        let handle = DriverHandle {
            commands: tx,
            wake: wake.clone(),
            stepped: stepped.clone(),
            status: status.clone(),
            restored: Arc::new(restored),
        };
        let driver = Driver {
            proxy,
            store,
            signals,
            scorer,
            synthetic,
            tick,
            runs,
            commands: rx,
            pending: HashMap::new(),
            applied: Vec::new(),
            wake,
            stepped,
            tallies: SharedTallies::default(),
            status,
            on_transition: None,
            known: Known::default(),
            reads: Reads::new(),
            outbox: Outbox::default(),
        };
        (driver, handle)
    }

    /// Calls `hook` after every step with a phase change (rollout start, each phase, the end).
    pub fn on_transition(&mut self, hook: TransitionHook) {
        self.on_transition = Some(hook);
    }

    /// Registers `rollgate_rollout_*` metrics, read from the published statuses.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register_collector(Box::new(super::metrics::RolloutCollector(
            self.status.clone(),
            self.tallies.clone(),
        )));
    }

    /// Re-applies the traffic of restored rollouts before the first request is routed, so a
    /// restart keeps the weights it had (no double promotion, no reset to the config's weight).
    pub fn restore_traffic(&self) {
        let restored = self
            .runs
            .iter()
            .filter(|(_, run)| run.state.directs_traffic())
            .map(|(model, run)| (model.clone(), Some(directive(&run.state))));
        self.proxy.set_directives(restored);
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let proxy = self.proxy.clone();
        let mut scoring = tokio::time::interval(SCORE_INTERVAL);
        scoring.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = scoring.tick() => {
                    let snap = self.proxy.snapshot();
                    self.sync_config(snap.config());
                    self.score_pairs().await;
                    continue;
                }
                _ = self.wake.notified() => {}
                _ = proxy.candidate_failure() => {
                    // A burst of failures wakes us once per BREACH_MIN_GAP at most.
                    tokio::time::sleep_until(last + BREACH_MIN_GAP).await;
                }
                Some(queued) = self.commands.recv() => self.queue(queued),
                _ = shutdown.changed() => return,
            }
            while let Ok(queued) = self.commands.try_recv() {
                self.queue(queued);
            }
            tokio::select! {
                () = self.step() => {}
                // Mid-step: a step yields every YIELD_EVERY models, so shutdown never waits
                // for a whole evaluation of a huge config.
                _ = shutdown.changed() => return,
            }
            last = tokio::time::Instant::now();
            for (ack, answer) in self.applied.drain(..) {
                // The caller may have stopped waiting (its timeout); the command stands.
                let _ = ack.send(answer);
            }
            // Commands left for a model (one applies per step) run on the next step, now.
            self.pending.retain(|_, q| !q.is_empty());
            if !self.pending.is_empty() {
                self.wake.notify_one();
            }
            self.stepped.notify_waiters();
        }
    }

    fn queue(&mut self, (model, cmd, ack): Queued) {
        self.pending.entry(model).or_default().push_back((cmd, ack));
    }

    /// Scores the shadow pairs gathered since the last call into each model's correctness and
    /// tallies. Runs every [`SCORE_INTERVAL`] as well as at each step, so a batch is at most
    /// [`rollgate_proxy::SHADOW_PAIRS_KEPT`] pairs, scored in slices of [`SCORE_SLICE`] with a
    /// [`SCORE_PAUSE`] between them and [`SCORE_BUDGET`] in all (see [`ScorePace`]). The scorer
    /// shares cores with the data plane's workers (the comparison pins the whole process to
    /// one): a one-second tick scoring up to 1,024 pairs held a core for about 10 ms once a
    /// second, a 100 ms batch of 64 for 0.4 ms ten times a second, and every request in flight
    /// waited that long, which showed in the primaries' p99 at saturation. The pauses delay the
    /// driver's next evaluation by as much, a breach's included (10 at most a batch).
    async fn score_pairs(&mut self) {
        let pairs = self.proxy.take_shadow_pairs();
        let mut pace = ScorePace::new(std::time::Instant::now());
        for (i, p) in pairs.iter().enumerate() {
            let now = std::time::Instant::now();
            match pace.next(now) {
                Pace::Go => {}
                Pace::Pause => {
                    tokio::time::sleep(SCORE_PAUSE).await;
                    pace.resumed(now, std::time::Instant::now());
                }
                Pace::Stop => {
                    let left = pairs.len() - i;
                    self.proxy.count_unscored_pairs(left as u64);
                    tracing::debug!(left, "scoring budget spent; pairs dropped");
                    break;
                }
            }
            self.score_pair(p);
        }
    }

    fn score_pair(&mut self, p: &ShadowPair) {
        if !self.known.index.contains_key(&*p.model) {
            return;
        }
        let score = (self.scorer)(p);
        let mut tallies = lock(&self.tallies);
        // Every configured model's tallies were made with the config (`sync_config`).
        let Some(tally) = tallies.get_mut(&*p.model) else {
            return;
        };
        let Some(score) = score else {
            tally.not_comparable += 1;
            return;
        };
        if !self.runs.contains_key(&*p.model) {
            self.runs
                .insert(p.model.to_string(), Run::new(RolloutState::idle()));
            // Not settled yet: the next step evaluates every model.
            self.known.unsettled = None;
        }
        if let Some(run) = self.runs.get_mut(&*p.model) {
            run.correctness.comparable_pairs += 1;
            if score >= crate::scoring::DEFAULT_PAIR_THRESHOLD {
                run.correctness.agreeing_pairs += 1;
            }
        }
        let bucket = crate::scoring::SCORE_BUCKETS.partition_point(|b| *b < score);
        if let Some(c) = tally
            .scores
            .get_mut(bucket.min(crate::scoring::SCORE_BUCKETS.len() - 1))
        {
            *c += 1;
        }
        tally.score_sum += score;
    }

    /// One evaluation of every model. A model whose last evaluation changed nothing and that
    /// nothing can move (no rollout to evaluate, no command waiting, the same config) is not
    /// evaluated again: an idle step over 50,000 static splits does nothing per model.
    pub async fn step(&mut self) {
        let snap = self.proxy.snapshot();
        let config = snap.config().clone();
        self.sync_config(&config);
        self.score_pairs().await;
        let order = self.to_evaluate(&config);
        self.read_signals(&config, &order).await;
        let mut transitions = 0;
        let mut unsettled = Vec::new();
        for (n, i) in order.into_iter().enumerate() {
            if n % YIELD_EVERY == YIELD_EVERY - 1 {
                // What the models so far decided takes effect now, not after the whole step.
                self.flush(&config);
                // Lets shutdown (and the admin API on the same runtime) in mid-step.
                tokio::task::yield_now().await;
            }
            let Some(m) = config.models.get(i) else {
                continue;
            };
            if !self.settled(m) && self.step_model(i, m, snap.revision()).await {
                transitions += 1;
            }
            if !self.settled(m) {
                unsettled.push(i);
            }
        }
        self.flush(&config);
        self.known.unsettled = Some(unsettled);
        // A command for a model that left the config is dropped; its sender hears so.
        let known = &self.known;
        self.pending
            .retain(|name, _| known.index.contains_key(name));
        if let (Some(hook), true) = (&self.on_transition, transitions > 0) {
            hook(snap.revision(), &self.status.read());
        }
    }

    /// Starts a signal read for every model of `order` with a rollout and none in flight, then
    /// takes finished reads until those it started are in, or [`READ_WAIT`] has passed.
    async fn read_signals(&mut self, config: &Config, order: &[usize]) {
        self.reads.take_finished();
        let mut started = HashSet::new();
        for m in order.iter().filter_map(|i| config.models.get(*i)) {
            if is_active(m) && !self.settled(m) && self.reads.inflight.insert(m.name.clone()) {
                started.insert(m.name.clone());
                let (signals, m) = (self.signals.clone(), m.clone());
                let (done, limit) = (self.reads.done_tx.clone(), self.reads.limit.clone());
                tokio::spawn(async move {
                    // Closed only with the driver; read anyway.
                    let _permit = limit.acquire_owned().await;
                    let read = signals.read(&m).await;
                    // The driver has gone: nobody needs it.
                    let _ = done.send((m, read));
                });
            }
        }
        if started.is_empty() {
            return;
        }
        let deadline = tokio::time::Instant::now() + READ_WAIT;
        while !started.is_empty() {
            match tokio::time::timeout_at(deadline, self.reads.done_rx.recv()).await {
                Ok(Some((m, read))) => {
                    started.remove(&m.name);
                    self.reads.finished(m, read);
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::debug!(
                        waiting = started.len(),
                        "signal reads still running; evaluating with the latest readings"
                    );
                    break;
                }
            }
        }
    }

    /// Positions of the models this step evaluates, in config order: every model after a new
    /// config, then only those not settled and those with a command waiting.
    fn to_evaluate(&self, config: &Config) -> Vec<usize> {
        let Some(unsettled) = &self.known.unsettled else {
            return (0..config.models.len()).collect();
        };
        let commanded = self.pending.keys().filter_map(|m| self.known.index.get(m));
        let mut all: Vec<usize> = unsettled.iter().chain(commanded).copied().collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Whether the model's last evaluation was a no-op that the next one would repeat.
    fn settled(&self, m: &Model) -> bool {
        let Some(run) = self.runs.get(&m.name) else {
            return false;
        };
        run.settled == Some(self.known.generation)
            && (self.pending.is_empty() || !self.pending.contains_key(&m.name))
    }

    /// Evaluates one model (at position `at` in the config) and executes what it decides;
    /// true on a phase change.
    async fn step_model(&mut self, at: usize, m: &Model, revision: &str) -> bool {
        if !self.runs.contains_key(&m.name) {
            self.runs
                .insert(m.name.clone(), Run::new(RolloutState::idle()));
        }
        let fingerprint = m.candidate.as_ref().map(fingerprint);
        let active = is_active(m);
        // `None` inside: no reading for this config of the model yet (its first still runs).
        let signals = active.then(|| self.reads.latest_for(m));
        let Some(run) = self.runs.get_mut(&m.name) else {
            return false;
        };
        let gated = active && matches!(run.state.phase, Phase::Shadow | Phase::Canary(_));
        let mut obs = if gated {
            self.proxy.observe_model(&m.name)
        } else {
            None
        };
        // Read once: the evaluation, the decision and whether a periodic run may start next all
        // judge this value, whatever a run finishing meanwhile writes into the slot.
        let synthetic = match (&m.rollout, active) {
            (Some(r), true) if r.synthetic.is_some() => lock(&run.synthetic).clone(),
            _ => SyntheticState::None,
        };
        let evaluation = match (&m.rollout, &obs, &signals) {
            (Some(r), Some(o), Some(sig)) if gated => Some(evaluate(
                &r.gates,
                r.min_samples,
                &gate_inputs(run, o, sig.as_ref(), &synthetic, min_pairs(r)),
            )),
            _ => None,
        };
        let (command, ack) = self
            .pending
            .get_mut(&m.name)
            .and_then(VecDeque::pop_front)
            .unzip();
        let inputs = Inputs {
            now_ms: unix_ms(),
            revision,
            candidate: fingerprint.as_deref(),
            rollout: m.rollout.as_ref(),
            evaluation: evaluation.as_ref(),
            health: signals
                .as_ref()
                .and_then(Option::as_ref)
                .map_or(Health::Unknown, |s| s.health.clone()),
            synthetic: &synthetic,
            command,
        };
        let (next, actions) = decide(&run.state, &inputs);
        let command = inputs.command;
        let refused = actions.iter().find_map(|a| match a {
            Action::Refuse(why) => Some(why.clone()),
            _ => None,
        });
        if let Some(ack) = ack {
            self.applied.push((ack, refused.map_or(Ok(()), Err)));
        }
        // Nothing moves a model without a rollout but a command or a new config.
        let quiet = !active && command.is_none() && actions.is_empty() && next == run.state;
        run.settled = quiet.then_some(self.known.generation);
        // A transition without an evaluation (Promote → Full, commands) keeps showing the
        // gate values that led up to it.
        if next.phase != run.state.phase && evaluation.is_some() {
            run.transition_eval.clone_from(&evaluation);
        }
        if next.candidate != run.state.candidate {
            // A new candidate's status never shows the previous one's gate values.
            run.transition_eval = None;
            run.last_eval = None;
        }
        if evaluation.is_some() {
            run.last_eval = evaluation;
        }
        let transition = next.phase != run.state.phase;
        if transition {
            // The weight served after it: the state's, or the config's when nothing directs.
            let weight = if next.directs_traffic() {
                Ppm::new(next.weight).unwrap_or(Ppm::ZERO)
            } else {
                super::live::traffic(m, None).weight
            };
            tracing::info!(model = %m.name, %revision, from = ?run.state.phase, to = ?next.phase, %weight, reason = %next.reason, "rollout transition");
        }
        held_changed(m, revision, &run.state, &next, command.as_ref());
        run.state = next;
        if obs.is_none() && actions.contains(&Action::ResetWindow) {
            obs = self.proxy.observe_model(&m.name);
        }
        // Statuses are refreshed every evaluation (gate values move without transitions);
        // one that follows a traffic change or a save waits for them (see `flush`).
        let wait = self.execute(m, actions, obs.as_ref());
        // Only now that its result has been judged may a new run replace it.
        self.start_periodic_synthetic(m, active, &synthetic);
        if wait {
            self.outbox.publish.push(at);
        } else {
            self.publish(m);
        }
        transition
    }

    /// Does what the step's decisions gathered so far: all traffic changes in one snapshot
    /// swap, then one save of the state, then the statuses that waited for them, then cleanup.
    fn flush(&mut self, config: &Config) {
        let out = std::mem::take(&mut self.outbox);
        if !out.traffic.is_empty() {
            self.proxy.set_directives(out.traffic);
        }
        if out.persist {
            self.persist();
        }
        for m in out.publish.iter().filter_map(|i| config.models.get(*i)) {
            self.publish(m);
        }
        for model in out.cleanup {
            tracing::info!(model = %model, "rollout cleanup done (nothing held in process)");
        }
    }

    /// Starts the periodic synthetic run of a rollout in Shadow or Canary when one is due, after
    /// the step judged the last result (`judged`): a run slower than `every` is due again the
    /// moment it finishes, and starting the next one first overwrote its failure with
    /// `Pending` before any gate saw it. A failure is never replaced by a periodic run: it
    /// rolls back, or waits for the pause or pin that holds the rollout to end.
    fn start_periodic_synthetic(&mut self, m: &Model, active: bool, judged: &SyntheticState) {
        let Some(every) = m
            .rollout
            .as_ref()
            .and_then(|r| r.synthetic.as_ref())
            .map(|s| s.every)
        else {
            return;
        };
        let Some(run) = self.runs.get(&m.name) else {
            return;
        };
        let due = run.synthetic_at.is_none_or(|t| t.elapsed() >= every);
        // `Pending` with no run started: a restored rollout, which has no result yet.
        let replaceable = match judged {
            SyntheticState::Passed => true,
            SyntheticState::Pending => run.synthetic_at.is_none(),
            SyntheticState::Failed(_) | SyntheticState::None => false,
        };
        if active
            && matches!(run.state.phase, Phase::Shadow | Phase::Canary(_))
            && due
            && replaceable
        {
            self.run_synthetic(m);
            tracing::debug!(model = %m.name, "periodic synthetic run");
        }
    }

    /// Prepares for a new serving config (a new `Arc`, so once per reload, not per step):
    /// indexes its models by name, forgets models that left it, gives every model its score
    /// tallies, and has every model evaluated on the next step.
    fn sync_config(&mut self, config: &Arc<Config>) {
        if self
            .known
            .config
            .as_ref()
            .is_some_and(|k| Arc::ptr_eq(k, config))
        {
            return;
        }
        self.known = Known::new(config.clone(), self.known.generation + 1);
        let known = &self.known;
        self.runs.retain(|name, _| known.index.contains_key(name));
        self.reads.retain(|name| known.index.contains_key(name));
        self.status
            .update(|s| s.retain(|name, _| known.index.contains_key(name)));
        // Every configured model has its score series from the start, zero until scored; a
        // removed model's leave `/metrics`.
        let mut tallies = lock(&self.tallies);
        tallies.retain(|name, _| known.index.contains_key(name));
        for m in &config.models {
            if !tallies.contains_key(&*m.name) {
                tallies.insert(m.name.clone(), Tallies::default());
            }
        }
    }

    /// Executes the model's actions; traffic, persist, publish and cleanup go to the outbox.
    /// Returns whether the model's status has to wait for the outbox's traffic and save.
    fn execute(&mut self, m: &Model, actions: Vec<Action>, obs: Option<&ModelObservation>) -> bool {
        let mut wait = false;
        for action in actions {
            match action {
                // The caller logs it with who asked (`operator::execute`).
                Action::Refuse(why) => {
                    tracing::debug!(model = %m.name, reason = %why, "operator command refused");
                }
                Action::ReleaseTraffic => {
                    self.outbox.traffic.push((m.name.clone(), None));
                    wait = true;
                }
                Action::SetTraffic { .. } => {
                    if let Some(run) = self.runs.get(&m.name) {
                        let d = Some(directive(&run.state));
                        self.outbox.traffic.push((m.name.clone(), d));
                        wait = true;
                    }
                }
                Action::ResetWindow => {
                    if let Some(run) = self.runs.get_mut(&m.name) {
                        run.baseline = obs.cloned();
                        run.correctness = Correctness::default();
                    }
                }
                Action::RunSynthetic => self.run_synthetic(m),
                Action::Persist => {
                    self.outbox.persist = true;
                    wait = true;
                }
                // The caller publishes after every evaluation.
                Action::Publish => {}
                Action::Cleanup => self.outbox.cleanup.push(m.name.clone()),
            }
        }
        wait
    }

    fn run_synthetic(&mut self, m: &Model) {
        let Some(run) = self.runs.get_mut(&m.name) else {
            return;
        };
        run.synthetic_at = Some(tokio::time::Instant::now());
        let slot = run.synthetic.clone();
        *lock(&slot) = SyntheticState::Pending;
        let fut = (self.synthetic)(m.clone());
        let wake = self.wake.clone();
        let (tallies, model) = (self.tallies.clone(), m.name.clone());
        tokio::spawn(async move {
            let result = fut.await;
            {
                let mut t = lock(&tallies);
                let t = t.entry(model).or_default();
                match result {
                    SyntheticState::Passed => t.synthetic_passed += 1,
                    SyntheticState::Failed(_) => t.synthetic_failed += 1,
                    SyntheticState::None | SyntheticState::Pending => {}
                }
            }
            *lock(&slot) = result;
            wake.notify_one();
        });
    }

    fn persist(&self) {
        let states: BTreeMap<String, &RolloutState> = self
            .runs
            .iter()
            .map(|(k, r)| (k.clone(), &r.state))
            .collect();
        if let Err(e) = self.store.save(&states) {
            tracing::error!(error = %e, "persisting rollout state failed; traffic is already set");
        }
    }

    fn publish(&self, m: &Model) {
        let Some(run) = self.runs.get(&m.name) else {
            return;
        };
        let change = m
            .candidate
            .as_ref()
            .map(|c| rollgate_config::rollout_change(&m.stable, c).as_str());
        let status = status_of(&m.name, change, run);
        self.status.update(|s| s.insert(m.name.clone(), status));
    }
}

/// Logs a pause or pin that began or ended: an operator's command, or a config change that
/// left it nothing to hold (the plan or the candidate removed).
fn held_changed(
    m: &Model,
    revision: &str,
    old: &RolloutState,
    new: &RolloutState,
    cmd: Option<&Command>,
) {
    if (old.paused.is_some(), old.pinned) == (new.paused.is_some(), new.pinned) {
        return;
    }
    let (model, pct) = (&m.name, |v: u32| {
        Ppm::new(v).unwrap_or(Ppm::ZERO).to_string()
    });
    if let Some(cmd) = cmd {
        let (paused, pinned) = (new.paused.as_deref(), new.pinned.map(pct));
        tracing::info!(%model, %revision, action = cmd.name(), ?paused, ?pinned, "operator hold changed");
    } else if old.paused.is_some() && new.paused.is_none() {
        tracing::info!(%model, %revision, phase = ?new.phase, "operator pause released: the model has no rollout any more");
    } else if let (Some(pin), None) = (old.pinned, new.pinned) {
        tracing::info!(%model, %revision, pin = %pct(pin), "operator pin released: the candidate it held left the config");
    }
}

/// Comparable pairs the shadow phase needs before it can pass.
fn min_pairs(r: &rollgate_config::Rollout) -> u64 {
    r.shadow.as_ref().map_or(0, |s| s.min_pairs)
}

/// `sig`: `None` while the model's first signal reading (under its current config) runs; the
/// gates on signals wait for it, the others judge the data plane's observations as ever.
fn gate_inputs(
    run: &Run,
    now: &ModelObservation,
    sig: Option<&ModelSignals>,
    synthetic: &SyntheticState,
    min_pairs: u64,
) -> GateInputs {
    // Pairs belong to Shadow (stragglers arriving after it ended do not count); in Canary only
    // a synthetic suite speaks for correctness.
    let mut correctness = if run.state.phase == Phase::Shadow {
        Correctness {
            min_pairs,
            ..run.correctness
        }
    } else {
        Correctness::default()
    };
    match synthetic {
        SyntheticState::Passed => correctness.synthetic_passed = 1,
        SyntheticState::Failed(_) => correctness.synthetic_failed = 1,
        SyntheticState::None | SyntheticState::Pending => {}
    }
    let has_synthetic = *synthetic != SyntheticState::None;
    let base = run.baseline.clone().unwrap_or_else(|| ModelObservation {
        model: now.model.clone(),
        ..zero_like(now)
    });
    let candidate = match run.state.phase {
        Phase::Shadow => VariantWindow::between(&base.shadow, &now.shadow),
        _ => VariantWindow::between(&base.candidate, &now.candidate),
    };
    GateInputs {
        stable: VariantWindow::between(&base.stable, &now.stable),
        candidate,
        queue_time: sig.map_or(Ok(None), |s| s.queue_time.clone()),
        gpu_memory: sig.map_or(Ok(None), |s| s.gpu_memory.clone()),
        promql: sig.map_or_else(Vec::new, |s| s.promql.clone()),
        signals_pending: sig.is_none(),
        // Pairs exist only in Shadow; in Canary only a synthetic suite speaks for correctness.
        correctness: (run.state.phase == Phase::Shadow || has_synthetic).then_some(correctness),
        ejections: now.ejections[1].saturating_sub(base.ejections[1]),
    }
}

/// A model the driver rolls out: a plan and a candidate.
fn is_active(m: &Model) -> bool {
    m.rollout.is_some() && m.candidate.is_some()
}

// === impl Reads ===

impl Reads {
    fn new() -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Reads {
            latest: HashMap::new(),
            inflight: HashSet::new(),
            done_tx,
            done_rx,
            limit: Arc::new(Semaphore::new(READS_IN_FLIGHT)),
        }
    }

    /// Takes the reads that finished since the last step (without waiting).
    fn take_finished(&mut self) {
        while let Ok((m, read)) = self.done_rx.try_recv() {
            self.finished(m, read);
        }
    }

    fn finished(&mut self, m: Model, read: ModelSignals) {
        self.inflight.remove(&m.name);
        self.latest.insert(m.name.clone(), (m, read));
    }

    /// The latest reading taken for this very config of the model (a reload that changed its
    /// endpoints or candidate needs a new one).
    fn latest_for(&self, m: &Model) -> Option<ModelSignals> {
        self.latest
            .get(&m.name)
            .filter(|(of, _)| of == m)
            .map(|(_, s)| s.clone())
    }

    /// Forgets readings of models that left the config.
    fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.latest.retain(|name, _| keep(name));
    }
}

fn zero_like(o: &ModelObservation) -> ModelObservation {
    ModelObservation {
        model: o.model.clone(),
        stable: Default::default(),
        candidate: Default::default(),
        shadow: Default::default(),
        shadow_drops: [0; rollgate_proxy::ShadowDrop::COUNT],
        ejections: [0; 2],
        fallbacks: 0,
    }
}

fn directive(s: &RolloutState) -> Directive {
    Directive {
        weight: Ppm::new(s.weight).unwrap_or(Ppm::ZERO),
        mirror: Ppm::new(s.mirror).unwrap_or(Ppm::ZERO),
    }
}

/// Identity of a candidate: its revision, engine and endpoints. A change starts a new rollout
/// (and is the only way to retry one that was rolled back).
pub fn fingerprint(b: &rollgate_config::Backend) -> String {
    let urls: Vec<&str> = b.endpoints.iter().map(|e| e.url.as_str()).collect();
    let key = format!(
        "{}|{}|{}",
        b.revision.as_deref().unwrap_or(""),
        b.engine.as_str(),
        urls.join(",")
    );
    format!(
        "{}@{:012x}",
        b.revision.as_deref().unwrap_or("candidate"),
        rollgate_proxy::hash64(key.as_bytes()) >> 16
    )
}

fn status_of(model: &str, change: Option<&'static str>, run: &Run) -> RolloutStatus {
    let s = &run.state;
    let pct = |v: u32| Ppm::new(v).unwrap_or(Ppm::ZERO).to_string();
    let mut status = RolloutStatus {
        model: model.to_owned(),
        candidate: s.candidate.clone(),
        started_revision: s.started_revision.clone(),
        change,
        phase: s.phase,
        paused: s.paused.clone(),
        pinned: s.pinned.map(pct),
        weight: pct(s.weight),
        mirror: pct(s.mirror),
        reason: s.reason.clone(),
        since_unix_ms: s.entered_ms,
        gates: run.last_eval.clone(),
        transition_gates: run.transition_eval.clone(),
        conditions: Vec::new(),
    };
    status.conditions = conditions(&status);
    status
}

/// `Ready`, `Reconciling` and `Stalled` as docs/gitops.md's table has them, with the same
/// reasons as the model's kstatus object (`gitops::build`; an invalid newer config, which only
/// that object knows, aside): `Reconciling` is `False Held` while a pause, a pin or a metric
/// hold stops a progressing rollout, `False Settled` when nothing is in progress.
fn conditions(r: &RolloutStatus) -> Vec<Condition> {
    let progressing = matches!(
        r.phase,
        Phase::Deploy | Phase::ValidateHealth | Phase::Shadow | Phase::Canary(_) | Phase::Promote
    );
    let rolled_back = matches!(r.phase, Phase::Previous | Phase::Rollback);
    let hold = crate::gitops::hold(r);
    let stalled = if rolled_back {
        Some(("RolledBack", format!("candidate rolled back: {}", r.reason)))
    } else {
        hold.clone()
    };
    let (phase, _) = crate::gitops::phase_name(r.phase);
    let cond = |kind, on: bool, reason, message: &str| Condition {
        kind,
        status: if on { "True" } else { "False" },
        reason,
        message: message.to_owned(),
    };
    let ready_reason = if rolled_back { "RolledBack" } else { phase };
    vec![
        cond(
            "Ready",
            matches!(r.phase, Phase::Full | Phase::Idle),
            ready_reason,
            &r.reason,
        ),
        match (progressing, &hold) {
            (true, None) => cond("Reconciling", true, phase, &r.reason),
            (true, Some((_, why))) => cond("Reconciling", false, "Held", why),
            (false, _) => cond("Reconciling", false, "Settled", &r.reason),
        },
        match &stalled {
            Some((reason, message)) => cond("Stalled", true, reason, message),
            None => cond("Stalled", false, "Healthy", "no error and no hold"),
        },
    ]
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl Run ===

impl Run {
    fn new(state: RolloutState) -> Run {
        Run {
            state,
            baseline: None,
            correctness: Correctness::default(),
            synthetic: Arc::new(Mutex::new(SyntheticState::Pending)),
            synthetic_at: None,
            last_eval: None,
            transition_eval: None,
            settled: None,
        }
    }
}

// === impl Known ===

impl Known {
    fn new(config: Arc<Config>, generation: u64) -> Known {
        Known {
            index: (config.models.iter().enumerate())
                .map(|(i, m)| (m.name.clone(), i))
                .collect(),
            config: Some(config),
            generation,
            unsettled: None,
        }
    }
}

// === impl DriverHandle ===

impl DriverHandle {
    /// Queues an operator command for a model and wakes the driver. The receiver completes once
    /// the step that took the command has published its status, with `Err(why)` when the
    /// command could not act on the model (no rollout to pause, nothing pinned, ...); a closed
    /// channel means the model left the config first. `None` when the queue is full.
    pub fn command(&self, model: &str, cmd: Command) -> Option<oneshot::Receiver<Applied>> {
        let (ack, applied) = oneshot::channel();
        let sent = self.commands.try_send((model.to_owned(), cmd, ack)).is_ok();
        self.wake.notify_one();
        sent.then_some(applied)
    }

    /// Notified after every completed step; enable a `notified()` before sending a command so
    /// that the step applying it is not missed.
    pub fn stepped(&self) -> Arc<Notify> {
        self.stepped.clone()
    }

    /// Wakes the driver now (a breach signal from the data plane).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Every model's status; one that no rollout directs (Idle) with the traffic it is
    /// served with now (the configured split, or none without a candidate).
    pub fn status(&self) -> Vec<RolloutStatus> {
        self.status.read()
    }

    /// The status of `m` alone (as [`DriverHandle::status`] has it), served under directive
    /// `d`; `None` before the driver's first step has published one.
    pub fn status_of(&self, m: &Model, d: Option<&Directive>) -> Option<RolloutStatus> {
        self.status.read_one(m, d)
    }

    /// Moves whenever the driver publishes a status: a reader that saw the same version (and
    /// the same data-plane snapshot, for Idle traffic) would read the same statuses.
    pub fn status_version(&self) -> u64 {
        self.status.version()
    }

    /// Whether `s` is still in the phase (or step) restored from the state file at startup:
    /// entered before this process started, so not a transition to announce again.
    pub fn is_restored(&self, s: &RolloutStatus) -> bool {
        self.restored.get(&s.model) == Some(&s.since_unix_ms)
    }
}

#[cfg(test)]
mod tests;
