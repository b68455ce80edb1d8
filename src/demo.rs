//! `rollgate demo`: the whole lifecycle against simulators. A stable and a good candidate
//! simulator, the gateway in front with a rollout plan, live traffic from simulated users; the
//! good candidate is validated, shadowed, walked through the canary steps and promoted; then a
//! bad candidate (the `--scenario`) is rolled out and rolled back. Every transition is printed
//! with the gate values behind it. `rollgate sim`: one simulator in the foreground.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rollgate_control::rollout::{Phase, RolloutStatus, Verdict};
use rollgate_loadtest::sim::{self, Faults, Ratio, Sim, SimArgs};
use tokio::net::TcpListener;

use crate::gateway::Gateway;

#[derive(clap::Args, Debug)]
pub(crate) struct DemoArgs {
    /// What is wrong with the second candidate.
    #[arg(long, value_enum, default_value = "errors")]
    scenario: Scenario,
    /// Upper bound on the whole demo; it normally ends when the bad candidate is rolled back.
    #[arg(long, default_value = "120", value_name = "SECONDS")]
    duration: u64,
    /// Requests per second sent by simulated users.
    #[arg(long, default_value = "100")]
    rate: u32,
    /// Seconds each phase (shadow, every canary step) is held at least.
    #[arg(long, default_value = "5", value_name = "SECONDS")]
    step_seconds: u64,
    /// Keep the temporary directory (config, suite, state, audit log) after the demo ends.
    #[arg(long)]
    keep: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// 5 % of the candidate's answers are 500s.
    Errors,
    /// The candidate is 300 ms slower to its first token.
    Latency,
    /// The candidate's GPU memory is at 95 %.
    GpuMemory,
    /// The candidate answers differently from stable.
    WrongAnswers,
    /// The candidate's pod goes away in the first canary step (deleted or evicted: its server
    /// stops accepting connections and finishes what it has in hand): candidate fallback keeps
    /// its users on stable while the rollback happens.
    Crash,
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

const SUITE: &str = "# Golden requests run against each candidate before it sees users.\n\
requests:\n\
\x20 - name: answers\n\
\x20   path: /v1/chat/completions\n\
\x20   body: { model: chat-small, messages: [{ role: user, content: \"hello\" }], max_tokens: 8 }\n\
\x20   expect: { status: 200, max_latency: 2s }\n\
\x20 - name: streams-to-done\n\
\x20   path: /v1/chat/completions\n\
\x20   body: { model: chat-small, stream: true, messages: [{ role: user, content: \"hello\" }] }\n\
\x20   expect: { stream_done: true }\n";

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let stable = start_sim("stable").await?;
    let good = start_sim("candidate-v2").await?;
    let bad = start_sim("candidate-v3").await?;
    bad.set_faults(args.scenario.faults());
    let dir = std::env::temp_dir().join(format!("rollgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("golden.yaml"), SUITE)?;
    // A throwaway operator token, so `rollgate ctl` works against the demo.
    std::fs::write(
        dir.join("admin.token"),
        format!("demo-{:016x}\n", fastrand::u64(..)),
    )?;
    let config = dir.join("rollgate.yaml");
    std::fs::write(
        &config,
        demo_config(&dir, &stable, &good, "v2", args.step_seconds),
    )?;
    let gw = Gateway::start(crate::gateway::Source::File(config.clone())).await?;
    println!(
        "rollgate demo — the whole rollout lifecycle; stops by itself (Ctrl-C stops it sooner)\n"
    );
    println!(
        "  stable simulator       {}  (model chat-small, revision v1)",
        stable.url()
    );
    println!("  good candidate         {}  (revision v2)", good.url());
    println!(
        "  bad candidate          {}  (revision v3: {:?})",
        bad.url(),
        args.scenario
    );
    println!("  gateway data plane     http://{}", gw.data);
    println!(
        "  admin                  http://{}/metrics  /status  /rollouts",
        gw.admin
    );
    println!("  config, suite, state   {}", dir.display());
    println!(
        "  operator CLI           rollgate ctl --admin http://{} --token-file {} status\n",
        gw.admin,
        dir.join("admin.token").display()
    );
    println!("Try it:");
    println!(
        "  curl -s http://{}/v1/chat/completions -H 'content-type: application/json' -H 'x-user-id: alice' \\\n       -d '{{\"model\":\"chat-small\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'\n",
        gw.data
    );
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let tally = Arc::new(Tally::default());
    let traffic = tokio::spawn(drive(client.clone(), gw.data, args.rate, tally.clone()));
    let outcome = lifecycle(&gw, &config, &dir, &stable, &bad, &args).await;
    traffic.abort();
    println!(
        "\n  users: {} requests answered, {} failed (a status other than 200, or no answer); {} candidate-bound requests fell back to stable",
        tally.ok.load(Relaxed) + tally.failed.load(Relaxed),
        tally.failed.load(Relaxed),
        fallbacks(&client, gw.admin).await.unwrap_or(0),
    );
    println!("\nstopping: draining the gateway and the simulators");
    gw.shutdown().await;
    for s in [stable, good, bad] {
        s.shutdown().await;
    }
    if args.keep {
        println!("kept {}", dir.display());
    } else if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove the demo directory");
    }
    outcome
}

/// Watches the rollout, printing every transition; swaps in the bad candidate once the good one
/// is Full; returns when the bad one is rolled back (or on timeout / Ctrl-C).
#[allow(clippy::print_stdout)]
async fn lifecycle(
    gw: &Gateway,
    config: &Path,
    dir: &Path,
    stable: &Sim,
    bad: &Sim,
    args: &DemoArgs,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.duration);
    let started = tokio::time::Instant::now();
    let mut last: Option<(Phase, Option<String>)> = None;
    let mut swapped = false;
    let mut crashed = false;
    let mut explained = false;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => return Ok(()),
        }
        if tokio::time::Instant::now() > deadline {
            println!("  demo time is up ({} s)", args.duration);
            return Ok(());
        }
        let Some(s) = gw
            .driver
            .status()
            .into_iter()
            .find(|s| s.model == "chat-small")
        else {
            continue;
        };
        let key = (s.phase, s.candidate.clone());
        if last.as_ref() == Some(&key) {
            // Past the phase's hold time and still in it: say once what it waits for (a gate
            // short of samples, e.g. TTFT at a 10 % step sees a tenth of the streams).
            if !explained && held_past(&s, args.step_seconds) {
                explained = true;
                if let Some(w) = waiting_for(&s) {
                    println!(
                        "          still in {} past its {} s: waiting for {w}",
                        phase(s.phase),
                        args.step_seconds
                    );
                }
            }
            continue;
        }
        last = Some(key);
        explained = false;
        println!(
            "  {:>5.1}s  {:<16} weight {:>4}  mirror {:>4}  {}",
            started.elapsed().as_secs_f64(),
            phase(s.phase),
            s.weight,
            s.mirror,
            s.reason
        );
        if let Some(g) = gates(&s) {
            println!("          gates: {g}");
        }
        match s.phase {
            Phase::Full if !swapped => {
                swapped = true;
                println!("\n  -> committing a new candidate (revision v3, {:?}) to the config; hot reload starts its rollout\n", args.scenario);
                std::fs::write(
                    config,
                    demo_config(dir, stable, bad, "v3", args.step_seconds),
                )?;
            }
            Phase::Canary(_) if swapped && !crashed && args.scenario == Scenario::Crash => {
                crashed = true;
                bad.stop();
                println!("\n  -> v3's pod goes away (deleted: its server stops accepting and finishes what it has): its users fall back to stable until the rollback\n");
            }
            Phase::Previous if swapped => {
                println!("\n  rolled back: stable serves everything; v3 will not be retried until the config changes it");
                return Ok(());
            }
            _ => {}
        }
    }
}

fn phase(p: Phase) -> String {
    match p {
        Phase::Canary(k) => format!("Canary(step {})", k + 1),
        other => format!("{other:?}"),
    }
}

/// Whether a shadow or canary phase has been held a second past its `for`.
fn held_past(s: &RolloutStatus, step_seconds: u64) -> bool {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    matches!(s.phase, Phase::Shadow | Phase::Canary(_))
        && now_ms > s.since_unix_ms + (step_seconds + 1) * 1000
}

/// `ttft_p95 (23 samples, 40 needed)`: the gates the last evaluation could not decide yet.
fn waiting_for(s: &RolloutStatus) -> Option<String> {
    let waiting: Vec<String> = (s.gates.as_ref()?.results.iter())
        .filter(|r| r.verdict == Verdict::Inconclusive)
        .map(|r| format!("{} ({})", r.gate, r.reason))
        .collect();
    (!waiting.is_empty()).then(|| waiting.join(", "))
}

/// `error_rate 0.00 % ✓  latency_p99 0.081 s ✓ …` from the last evaluation.
fn gates(s: &RolloutStatus) -> Option<String> {
    let e = s.transition_gates.as_ref()?;
    let parts: Vec<String> = e
        .results
        .iter()
        .map(|r| {
            let mark = match r.verdict {
                Verdict::Pass => "pass",
                Verdict::Fail => "FAIL",
                Verdict::Inconclusive => "wait",
            };
            let value = match (r.gate, r.value) {
                ("error_rate" | "gpu_memory_used" | "correctness", Some(v)) => {
                    format!("{:.2} %", v * 100.0)
                }
                ("latency_p99" | "ttft_p95" | "queue_time_p95", Some(v)) => format!("{v:.3} s"),
                ("ejection", Some(v)) => format!("{v:.0}"),
                (_, Some(v)) => format!("{v:.3}"),
                (_, None) => "-".to_owned(),
            };
            format!("{} {value} [{mark}]", r.gate)
        })
        .collect();
    Some(parts.join("  "))
}

/// `rollgate sim`: one simulator until SIGINT/SIGTERM.
#[allow(clippy::print_stdout)]
pub(crate) async fn run_sim(args: SimArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let sim = sim::start(args, listener).await?;
    println!("rollgate sim ready: {}", sim.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    sim.shutdown().await;
    Ok(())
}

async fn start_sim(name: &str) -> anyhow::Result<Sim> {
    let args = SimArgs {
        model: "chat-small".into(),
        name: Some(name.into()),
        ttft: Duration::from_millis(30),
        tpot: Duration::from_millis(3),
        output_tokens: 16,
        ..SimArgs::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    sim::start(args, listener).await
}

fn demo_config(dir: &Path, stable: &Sim, candidate: &Sim, revision: &str, step: u64) -> String {
    format!(
        "# Written by `rollgate demo`.\n\
         listen: 127.0.0.1:0\n\
         admin: {{ listen: 127.0.0.1:0, token_file: {token} }}\n\
         workers: 1\n\
         drain_timeout: 5s\n\
         state_dir: {state}\n\
         models:\n\
         \x20 - name: chat-small\n\
         \x20   default: true\n\
         \x20   stable:    {{ endpoints: [\"{stable}\"], engine: vllm, revision: v1 }}\n\
         \x20   candidate: {{ endpoints: [\"{candidate}\"], engine: vllm, revision: {revision}, gpu_metrics: [\"{candidate}/metrics\"] }}\n\
         \x20   cohort: {{ header: x-user-id }}\n\
         \x20   rollout:\n\
         \x20     synthetic: {{ suite: golden.yaml, every: 10s }}\n\
         \x20     shadow: {{ sample: 50%, for: {step}s, min_pairs: 40 }}\n\
         \x20     steps: [ {{ weight: 10%, for: {step}s }}, {{ weight: 30%, for: {step}s }}, {{ weight: 60%, for: {step}s }} ]\n\
         \x20     gates:\n\
         \x20       error_rate: {{ max: 1%, max_vs_stable: +0.5% }}\n\
         \x20       latency_p99: {{ max: 2s, max_ratio_vs_stable: 1.5 }}\n\
         \x20       ttft_p95: {{ max: 250ms }}\n\
         \x20       gpu_memory_used: {{ max: 92% }}\n\
         \x20       correctness: {{ min: 0.9 }}\n\
         \x20     min_samples: 40\n\
         \x20     cooldown: 0s\n",
        state = dir.join("state").display(),
        token = dir.join("admin.token").display(),
        stable = stable.url(),
        candidate = candidate.url(),
    )
}

/// Open-loop traffic: `rate` requests per second from 500 users, every third one streamed.
/// `rollgate_proxy_candidate_fallbacks_total` of the demo's model, from the admin API.
async fn fallbacks(client: &HttpClient, admin: std::net::SocketAddr) -> Option<u64> {
    let uri = format!("http://{admin}/metrics").parse().ok()?;
    let page = client
        .get(uri)
        .await
        .ok()?
        .into_body()
        .collect()
        .await
        .ok()?;
    let page = String::from_utf8_lossy(&page.to_bytes()).into_owned();
    let series = "rollgate_proxy_candidate_fallbacks_total{model=\"chat-small\"} ";
    page.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

/// What the simulated users saw.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

async fn drive(client: HttpClient, addr: std::net::SocketAddr, rate: u32, tally: Arc<Tally>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        let user = fastrand::u32(..500);
        let stream = n % 3 == 0;
        let body = format!(
            "{{\"model\":\"chat-small\",\"stream\":{stream},\"messages\":[{{\"role\":\"user\",\"content\":\"question {}\"}}]}}",
            n % 50
        );
        let req = hyper::Request::post(format!("http://{addr}/v1/chat/completions"))
            .header("content-type", "application/json")
            .header("x-user-id", format!("user-{user}"))
            .body(Full::new(Bytes::from(body)));
        let Ok(req) = req else { continue };
        let (client, tally) = (client.clone(), tally.clone());
        tokio::spawn(async move {
            let ok = match client.request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    resp.into_body().collect().await.is_ok() && status == hyper::StatusCode::OK
                }
                Err(_) => false,
            };
            let n = if ok { &tally.ok } else { &tally.failed };
            n.fetch_add(1, Relaxed);
        });
    }
}

// === impl Scenario ===

impl Scenario {
    fn faults(self) -> Faults {
        let mut f = Faults::default();
        match self {
            Scenario::Errors => f.error_rate = Ratio::new(0.05).unwrap_or(Ratio::ZERO),
            Scenario::Latency => f.extra_latency = Duration::from_millis(300),
            Scenario::GpuMemory => f.gpu_memory_used = Ratio::new(0.95).ok(),
            Scenario::WrongAnswers => f.wrong_answers = Ratio::ONE,
            // Healthy until it is stopped mid-canary.
            Scenario::Crash => {}
        }
        f
    }
}
