//! Acceptance: the rollout gates. A slower candidate is rolled back by its latency or TTFT gate;
//! GPU memory past its bound (simulated, and read by `rollgate gpu-agent` through a fake NVML
//! library) and queue time past its bound roll back; a failing golden suite keeps the candidate
//! away from users and wrong answers in Shadow never reach Canary; an unreadable `/metrics` page
//! aborts or holds as configured and never promotes. Users keep getting 200 from stable.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rollgate_loadtest::sim::{Faults, Ratio, Sim};
use serde_json::Value;
use tokio::time::Instant;

use crate::support::*;

use self::endpoints::{Front, GpuAgent, Page};
use self::traffic::*;

#[path = "gates/endpoints.rs"]
mod endpoints;
#[path = "gates/traffic.rs"]
mod traffic;

/// Samples a gate needs in its window: small, so that a breach is judged within a second or
/// two, and still enough for the one-sided 95 % tests to be significant (30 of 30 samples over a
/// bound have a Wilson lower bound near 89 %).
const MIN_SAMPLES: u32 = 30;
/// `for:` of steps that must not end during a test: the rollback has to come from a gate.
const LONG: &str = "60s";

/// A config for model `m`: stable simulator, candidate endpoint URL, cohorts by `x-user-id`,
/// and the given rollout `plan` (a YAML flow mapping). The candidate's own page is also its GPU
/// memory page (`gpu_metrics`): vLLM reports none, the simulator and a merged agent page do.
/// The model's own `shadow` section only keeps the plan's Shadow-phase mirrors while a worker is
/// saturated (`saturated_sample: 100%`): these tests wait for pairs, and a debug build on a loaded
/// host can read as saturated and, by default, mirror 1 % of the sample meanwhile.
fn rollout_config(stable: &Sim, candidate: &str, plan: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nworkers: 2\nadmin: {{ listen: 127.0.0.1:0 }}\n\
         models:\n  - name: m\n    stable: {{ endpoints: [\"{}\"], engine: vllm }}\n    \
         candidate: {{ endpoints: [\"{candidate}\"], engine: vllm, revision: v2, gpu_metrics: [\"{candidate}/metrics\"] }}\n    \
         cohort: {{ header: x-user-id }}\n    shadow: {{ sample: 0%, saturated_sample: 100% }}\n    \
         rollout: {plan}\n",
        stable.url()
    )
}

/// A plan: `steps` and `gates` are YAML flow values; `extra` more keys (`, shadow: …`).
fn plan(steps: &str, gates: &str, extra: &str) -> String {
    format!("{{ steps: {steps}, gates: {gates}, min_samples: {MIN_SAMPLES}{extra} }}")
}

/// Waits for Canary(0) with `gate` passing (failing at once on a rollback); returns the
/// passing status.
async fn canary_with_passing(gw: &Gateway, watch: &mut Watch, name: &str) -> Value {
    let (s, _) = watch
        .until(gw, &format!("Canary(0) with {name} passing"), |s| {
            is(s, "Previous")
                || is(s, "Canary(0)")
                    && gate(&s["gates"], name).is_some_and(|g| g["verdict"] == "pass")
        })
        .await;
    assert!(
        !is(&s, "Previous"),
        "rolled back before {name} was seen passing: {s:#}"
    );
    s
}

/// Asserts a rollback by `name`: Previous, weight and mirror 0, the reason and the gate values
/// behind the transition name the gate as failed; returns that gate's result.
fn assert_rolled_back_by(s: &Value, name: &str) -> Value {
    assert!(is(s, "Previous"), "{s:#}");
    assert_eq!(s["weight"], "0%", "{s:#}");
    assert_eq!(s["mirror"], "0%", "{s:#}");
    assert!(
        reason(s).starts_with("gate failed") && reason(s).contains(&format!("{name}:")),
        "the reason should name {name}: {s:#}"
    );
    let g = gate(&s["transition_gates"], name).unwrap_or_else(|| panic!("no {name} in {s:#}"));
    assert_eq!(g["verdict"], "fail", "{s:#}");
    g.clone()
}

// === 1. Latency and TTFT ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_300ms_slower_is_rolled_back_by_latency_p99_in_a_canary_step() {
    let _heavy = heavy().await;
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    candidate.set_faults(Faults {
        extra_latency: Duration::from_millis(300),
        ..Faults::default()
    });
    // No shadow phase: the first users reach the slow candidate in step 1.
    let plan = plan(
        &format!("[{{ weight: 50%, for: {LONG} }}, {{ weight: 90%, for: {LONG} }}]"),
        "{ latency_p99: { max_ratio_vs_stable: 1.5 } }",
        "",
    );
    let gw = Gateway::start(&rollout_config(&stable, &candidate.url(), &plan));
    let load = Load::start(&gw, "lat", 6, false, Duration::ZERO);
    let mut watch = Watch::default();
    let (_, step_at) = watch
        .until(&gw, "canary step 1", |s| is(s, "Canary(0)"))
        .await;
    let (s, back_at) = watch.until(&gw, "rollback", |s| is(s, "Previous")).await;
    let g = assert_rolled_back_by(&s, "latency_p99");
    watch.only(
        &["Deploy", "ValidateHealth", "Canary(0)", "Previous"],
        "latency",
    );
    // The gate saw the 300 ms: the candidate's p99 against 1.5 × stable's few milliseconds.
    let (value, threshold) = (num(&g["value"]), num(&g["threshold"]));
    assert!(value >= 0.25 && threshold < 0.1, "{g:#}");
    assert!(
        reason(&s).contains("during step 1"),
        "the breach should be judged in the canary step: {s:#}"
    );
    eprintln!(
        "latency_p99: rolled back {:?} after step 1 began (p99 {value:.3} s > {threshold:.4} s, {} samples)",
        back_at - step_at,
        g["samples"]
    );
    let sent = assert_candidate_gets_nothing(&gw, &candidate, load, "latency").await;
    assert!(
        all_ok(&sent, "latency") > 0,
        "users should have reached the candidate in step 1"
    );
    drop(gw);
    stable.shutdown().await;
    candidate.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_300ms_slower_to_first_token_is_rolled_back_by_ttft_p95_in_shadow() {
    let _heavy = heavy().await;
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    candidate.set_faults(Faults {
        extra_latency: Duration::from_millis(300),
        ..Faults::default()
    });
    let plan = plan(
        &format!("[{{ weight: 50%, for: {LONG} }}]"),
        "{ ttft_p95: { max: 200ms } }",
        &format!(", shadow: {{ sample: 100%, for: {LONG}, min_pairs: {MIN_SAMPLES} }}"),
    );
    let gw = Gateway::start(&rollout_config(&stable, &candidate.url(), &plan));
    let load = Load::start(&gw, "ttft", 4, true, Duration::from_millis(2));
    let mut watch = Watch::default();
    let (_, shadow_at) = watch.until(&gw, "shadow", |s| is(s, "Shadow")).await;
    let (s, back_at) = watch.until(&gw, "rollback", |s| is(s, "Previous")).await;
    let g = assert_rolled_back_by(&s, "ttft_p95");
    watch.only(&["Deploy", "ValidateHealth", "Shadow", "Previous"], "ttft");
    let value = num(&g["value"]);
    assert!(value >= 0.25, "the gate should see the 300 ms: {g:#}");
    eprintln!(
        "ttft_p95: rolled back {:?} after Shadow began (p95 {value:.3} s > 0.200 s, {} samples)",
        back_at - shadow_at,
        g["samples"]
    );
    let sent = assert_candidate_gets_nothing(&gw, &candidate, load, "ttft").await;
    // Only mirrors ever reached the candidate: every user was answered by stable.
    assert_eq!(all_ok(&sent, "ttft"), 0, "users reached the candidate");
    let mirrored = candidate.requests_total();
    assert!(mirrored >= u64::from(MIN_SAMPLES), "{mirrored} mirrors");
    assert_eq!(candidate.shadow_requests_total(), mirrored);
    drop(gw);
    stable.shutdown().await;
    candidate.shutdown().await;
}

// === 2. GPU memory and queue time ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_gpu_memory_climbing_past_92_percent_rolls_back_a_canary_step() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let plan = plan(
        &format!("[{{ weight: 30%, for: {LONG} }}]"),
        "{ gpu_memory_used: { max: 92% } }",
        "",
    );
    let gw = Gateway::start(&rollout_config(&stable, &candidate.url(), &plan));
    let load = Load::start(&gw, "gpu", 2, false, Duration::from_millis(5));
    let mut watch = Watch::default();
    let s = canary_with_passing(&gw, &mut watch, "gpu_memory_used").await;
    // The simulator's idle 60 % plus its KV cache.
    let before = num(&gate(&s["gates"], "gpu_memory_used").expect("gate")["value"]);
    assert!((0.55..0.92).contains(&before), "{s:#}");
    candidate.set_faults(Faults {
        gpu_memory_used: Ratio::new(0.95).ok(),
        ..Faults::default()
    });
    let climbed = Instant::now();
    let (s, back_at) = watch.until(&gw, "rollback", |s| is(s, "Previous")).await;
    let g = assert_rolled_back_by(&s, "gpu_memory_used");
    assert!((num(&g["value"]) - 0.95).abs() < 0.01, "{g:#}");
    assert!((num(&g["threshold"]) - 0.92).abs() < 1e-9, "{g:#}");
    watch.only(
        &["Deploy", "ValidateHealth", "Canary(0)", "Previous"],
        "gpu",
    );
    eprintln!(
        "gpu_memory_used (simulator): rolled back {:?} after memory reached 95 %",
        back_at - climbed
    );
    let sent = assert_candidate_gets_nothing(&gw, &candidate, load, "gpu").await;
    assert!(all_ok(&sent, "gpu") > 0, "step 1 should have served users");
    drop(gw);
    stable.shutdown().await;
    candidate.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_agent_reading_fake_nvml_past_92_percent_rolls_back_a_canary_step() {
    let agent = GpuAgent::start();
    agent.set_used(&[(40, 80), (40, 80)]);
    let stable = start_sim("stable", "m", |_| {}).await;
    let sim = start_sim("candidate", "m", |_| {}).await;
    let front = Front::start(&sim, Page::SimAnd(format!("{}/metrics", agent.url))).await;
    let plan = plan(
        &format!("[{{ weight: 30%, for: {LONG} }}]"),
        "{ gpu_memory_used: { max: 92% } }",
        "",
    );
    let gw = Gateway::start(&rollout_config(&stable, &front.url(), &plan));
    let load = Load::start(&gw, "nvml", 2, false, Duration::from_millis(5));
    let mut watch = Watch::default();
    // 50 % is NVML's number through the agent: the simulator's own series say 60 % or more,
    // and the agent's win on the same page.
    let used = |s: &Value| gate(&s["gates"], "gpu_memory_used").map(|g| num(&g["value"]));
    let near = |s: &Value, want: f64| used(s).is_some_and(|v| (v - want).abs() < 0.005);
    watch
        .until(&gw, "Canary(0) reading 50 % from NVML", |s| {
            is(s, "Canary(0)") && near(s, 0.5)
        })
        .await;
    // Climbing, still under the bound: nothing happens.
    agent.set_used(&[(68, 80), (68, 80)]);
    let (s, _) = watch
        .until(&gw, "the gate reading 85 %", |s| near(s, 0.85))
        .await;
    assert!(is(&s, "Canary(0)"), "{s:#}");
    assert_eq!(
        gate(&s["gates"], "gpu_memory_used").expect("gate")["verdict"],
        "pass"
    );
    // Past it: 76 of 80 GiB on both GPUs.
    agent.set_used(&[(76, 80), (76, 80)]);
    let climbed = Instant::now();
    let (s, back_at) = watch.until(&gw, "rollback", |s| is(s, "Previous")).await;
    let g = assert_rolled_back_by(&s, "gpu_memory_used");
    assert!((num(&g["value"]) - 0.95).abs() < 0.005, "{g:#}");
    watch.only(
        &["Deploy", "ValidateHealth", "Canary(0)", "Previous"],
        "nvml",
    );
    eprintln!(
        "gpu_memory_used (gpu-agent, fake NVML): rolled back {:?} after the state file said 95 %",
        back_at - climbed
    );
    let sent = assert_candidate_gets_nothing(&gw, &sim, load, "nvml").await;
    assert!(all_ok(&sent, "nvml") > 0, "step 1 should have served users");
    drop(gw);
    drop(front);
    stable.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_time_past_its_bound_rolls_back_a_canary_step() {
    // 500 ms is one of vLLM's `request_queue_time_seconds` bucket bounds (0.3, 0.5, 0.8, …), so
    // the share of samples above it is counted, not interpolated.
    queue_time_gate("500ms").await;
}

/// With `queue_time_p95: { max }` (at most 500 ms): a candidate that rarely queues passes the
/// gate; once two dozen users wait on its single slot, it is rolled back by the gate.
async fn queue_time_gate(max: &str) {
    let _heavy = heavy().await;
    let stable = start_sim("stable", "m", |_| {}).await;
    // One request at a time, 50 ms each: a few users at once make a queue.
    let candidate = start_sim("candidate", "m", |a| {
        a.max_concurrency = 1;
        a.ttft = Duration::from_millis(50);
    })
    .await;
    let plan = plan(
        &format!("[{{ weight: 50%, for: {LONG} }}]"),
        &format!("{{ queue_time_p95: {{ max: {max} }} }}"),
        "",
    );
    let gw = Gateway::start(&rollout_config(&stable, &candidate.url(), &plan));
    // Two users at a time: the candidate waits at most one 50 ms request, and the gate passes.
    let light = Load::start(&gw, "queue-light", 2, false, Duration::ZERO);
    let mut watch = Watch::default();
    let s = canary_with_passing(&gw, &mut watch, "queue_time_p95").await;
    let g = gate(&s["gates"], "queue_time_p95").expect("gate");
    assert!(
        g["samples"].as_u64() >= Some(u64::from(MIN_SAMPLES)),
        "{g:#}"
    );
    // Twenty-four users at a time: about twelve wait in the candidate's queue, ~600 ms each.
    let heavy_load = Load::start(&gw, "queue-heavy", 24, false, Duration::ZERO);
    let busy = Instant::now();
    let (s, back_at) = watch.until(&gw, "rollback", |s| is(s, "Previous")).await;
    let g = assert_rolled_back_by(&s, "queue_time_p95");
    assert!(num(&g["value"]) > 0.5, "{g:#}");
    assert!(num(&g["threshold"]) <= 0.5, "{g:#}");
    watch.only(
        &["Deploy", "ValidateHealth", "Canary(0)", "Previous"],
        "queue",
    );
    eprintln!(
        "queue_time_p95: rolled back {:?} after the queue built up (p95 {:.3} s > {max}, {} samples)",
        back_at - busy,
        num(&g["value"]),
        g["samples"]
    );
    let sent = light.finish().await;
    all_ok(&sent, "queue, light");
    let sent = assert_candidate_gets_nothing(&gw, &candidate, heavy_load, "queue").await;
    assert!(
        all_ok(&sent, "queue") > 0,
        "step 1 should have served users"
    );
    drop(gw);
    stable.shutdown().await;
    candidate.shutdown().await;
}

// === 3. Wrong answers ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_synthetic_suite_rolls_back_before_the_candidate_sees_a_user() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    // The golden answer is stable's (deterministic) answer; a correct candidate gives the same.
    let golden = chat("m", "capital of France?", false);
    let answer = |sim: &Sim| {
        let (c, url) = (client(), format!("{}/v1/chat/completions", sim.url()));
        let body = golden.clone();
        async move {
            let r = send(&c, &url, &[], body).await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["choices"][0]["message"]["content"].clone()
        }
    };
    let expected = answer(&stable).await;
    assert!(expected.is_string(), "{expected}");
    assert_eq!(
        answer(&candidate).await,
        expected,
        "a correct candidate agrees"
    );
    candidate.set_faults(Faults {
        wrong_answers: Ratio::ONE,
        ..Faults::default()
    });
    assert_ne!(answer(&candidate).await, expected);
    candidate.reset_received();
    // Users are served before the candidate is deployed; then a config change brings it with
    // its golden suite written next to the config file.
    let gw = Gateway::start(&config(
        &stable,
        None,
        "    cohort: { header: x-user-id }\n",
        "",
    ));
    let load = Load::start(&gw, "golden", 2, false, Duration::from_millis(5));
    load.answered(20).await;
    let suite = format!(
        "requests:\n  - name: capital\n    path: /v1/chat/completions\n    body: {golden}\n    \
         expect: {{ status: 200, json: {{ \"choices[0].message.content\": {{ equals: {expected} }} }} }}\n"
    );
    std::fs::write(gw.dir.join("golden.yaml"), suite).expect("write suite");
    let plan = plan(
        &format!("[{{ weight: 50%, for: {LONG} }}]"),
        "{ error_rate: { max: 1% } }",
        &format!(
            ", synthetic: {{ suite: golden.yaml, every: 1s }}, \
             shadow: {{ sample: 100%, for: {LONG}, min_pairs: {MIN_SAMPLES} }}"
        ),
    );
    let reload = gw
        .apply_config(&rollout_config(&stable, &candidate.url(), &plan))
        .await;
    assert_eq!(reload["result"], "success", "{reload}");
    let mut watch = Watch::default();
    let (s, _) = watch.until(&gw, "rollback", |s| is(s, "Previous")).await;
    // Rolled back from ValidateHealth: no shadow, no canary, and the failed check is named.
    watch.only(&["Idle", "Deploy", "ValidateHealth", "Previous"], "golden");
    assert!(
        reason(&s).starts_with("synthetic checks failed: capital:"),
        "{s:#}"
    );
    assert_eq!(s["weight"], "0%", "{s:#}");
    // More users after the rollback; the periodic suite does not run in Previous either.
    load.answered(load.count.load(Relaxed) + 200).await;
    let sent = load.finish().await;
    assert_eq!(all_ok(&sent, "golden"), 0, "users reached the candidate");
    assert_eq!(
        candidate.requests_total(),
        1,
        "the candidate should have received the suite's one request and nothing else: {:?}",
        candidate.received()
    );
    assert_eq!(candidate.shadow_requests_total(), 0);
    drop(gw);
    stable.shutdown().await;
    candidate.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_answers_in_shadow_fail_correctness_and_never_reach_canary() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    candidate.set_faults(Faults {
        wrong_answers: Ratio::ONE,
        ..Faults::default()
    });
    let plan = plan(
        "[{ weight: 50%, for: 2s }]",
        "{ correctness: { min: 0.9 } }",
        &format!(", shadow: {{ sample: 100%, for: 2s, min_pairs: {MIN_SAMPLES} }}"),
    );
    let gw = Gateway::start(&rollout_config(&stable, &candidate.url(), &plan));
    let load = Load::start(&gw, "wrong", 3, false, Duration::from_millis(2));
    let mut watch = Watch::default();
    let (_, shadow_at) = watch.until(&gw, "shadow", |s| is(s, "Shadow")).await;
    let (s, back_at) = watch.until(&gw, "rollback", |s| is(s, "Previous")).await;
    let g = assert_rolled_back_by(&s, "correctness");
    assert!(reason(&s).contains("during shadow"), "{s:#}");
    assert!(num(&g["value"]) < 0.9, "{g:#}");
    assert!(
        g["samples"].as_u64() >= Some(u64::from(MIN_SAMPLES)),
        "judged on fewer pairs than min_pairs: {g:#}"
    );
    // Every status polled, 20 ms apart, from the first: never Canary, never any weight.
    watch.only(&["Deploy", "ValidateHealth", "Shadow", "Previous"], "wrong");
    assert!(watch.seen.iter().all(|s| s["weight"] == "0%"));
    eprintln!(
        "correctness: rolled back {:?} after Shadow began ({:.0} % of {} pairs agree)",
        back_at - shadow_at,
        num(&g["value"]) * 100.0,
        g["samples"]
    );
    let sent = assert_candidate_gets_nothing(&gw, &candidate, load, "wrong").await;
    assert_eq!(all_ok(&sent, "wrong"), 0, "users reached the candidate");
    assert_eq!(
        candidate.shadow_requests_total(),
        candidate.requests_total(),
        "only mirrors may reach the candidate"
    );
    drop(gw);
    stable.shutdown().await;
    candidate.shutdown().await;
}

/// A candidate broken in Shadow — every stream cut, or the server gone — fails its mirrors:
/// they are the shadow's errors, and `error_rate` rolls it back (they were only counted as
/// dropped, and the rollout waited in Shadow for samples that never came).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_breaks_its_mirrors_is_rolled_back_in_shadow() {
    for case in ["cut", "down"] {
        let stable = start_sim("stable", "m", |_| {}).await;
        let candidate = start_sim("candidate", "m", |_| {}).await;
        let plan = plan(
            &format!("[{{ weight: 50%, for: {LONG} }}]"),
            "{ error_rate: { max: 5% } }",
            &format!(", shadow: {{ sample: 100%, for: {LONG}, min_pairs: {MIN_SAMPLES} }}"),
        );
        let gw = Gateway::start(&rollout_config(&stable, &candidate.url(), &plan));
        let mut watch = Watch::default();
        let (_, shadow_at) = watch.until(&gw, "shadow", |s| is(s, "Shadow")).await;
        match case {
            "cut" => candidate.set_faults(Faults {
                truncate_rate: Ratio::ONE,
                ..Faults::default()
            }),
            _ => candidate.stop(),
        }
        let load = Load::start(&gw, case, 3, true, Duration::from_millis(2));
        let (s, back_at) = watch.until(&gw, "rollback", |s| is(s, "Previous")).await;
        assert!(reason(&s).contains("during shadow"), "{case}: {s:#}");
        let failed = reason(&s).contains("error_rate") || reason(&s).contains("eject");
        assert!(failed, "{case}: the mirrors' failures roll it back: {s:#}");
        watch.only(&["Deploy", "ValidateHealth", "Shadow", "Previous"], case);
        eprintln!(
            "{case}: rolled back {:?} after Shadow began",
            back_at - shadow_at
        );
        let sent = load.finish().await;
        assert_eq!(
            all_ok(&sent, case),
            0,
            "{case}: users reached the candidate"
        );
        drop(gw);
        stable.shutdown().await;
        candidate.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_answers_pass_correctness_in_shadow_only_after_min_pairs() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    // Far more pairs than `min_samples`: Shadow may pass only once it has them all.
    let min_pairs = 300;
    let plan = plan(
        "[{ weight: 50%, for: 60s }]",
        "{ correctness: { min: 0.9 } }",
        &format!(", shadow: {{ sample: 100%, for: 1s, min_pairs: {min_pairs} }}"),
    );
    let gw = Gateway::start(&rollout_config(&stable, &candidate.url(), &plan));
    let load = Load::start(&gw, "right", 2, false, Duration::from_millis(5));
    let mut watch = Watch::default();
    let (s, _) = watch
        .until(&gw, "canary step 1", |s| is(s, "Canary(0)"))
        .await;
    let g = gate(&s["transition_gates"], "correctness").expect("correctness gate");
    assert_eq!(g["verdict"], "pass", "{s:#}");
    assert_eq!(num(&g["value"]), 1.0, "{g:#}");
    assert!(
        g["samples"].as_u64() >= Some(min_pairs),
        "Shadow passed on fewer pairs than min_pairs: {g:#}"
    );
    // While it waited for them, the gate said why.
    assert!(
        watch.seen.iter().any(|s| is(s, "Shadow")
            && gate(&s["gates"], "correctness").is_some_and(|g| g["verdict"] == "inconclusive")),
        "phases {:?}",
        watch.phases()
    );
    all_ok(&load.finish().await, "right");
    drop(gw);
    stable.shutdown().await;
    candidate.shutdown().await;
}

// === 4. Unreadable signals ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_metrics_abort_after_the_limit_and_never_promote() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let sim = start_sim("candidate", "m", |_| {}).await;
    let front = Front::start(&sim, Page::Down).await;
    let plan = plan(
        "[{ weight: 20%, for: 1s }, { weight: 50%, for: 1s }]",
        "{ gpu_memory_used: { max: 92% } }",
        ", metric_errors: { limit: 3, then: abort }",
    );
    let gw = Gateway::start(&rollout_config(&stable, &front.url(), &plan));
    let load = Load::start(&gw, "down", 2, false, Duration::from_millis(5));
    let mut watch = Watch::default();
    let (s, step_at) = watch
        .until(&gw, "step 1 with the gate inconclusive", |s| {
            is(s, "Canary(0)")
                && gate(&s["gates"], "gpu_memory_used").is_some_and(|g| g["metric_error"] == true)
        })
        .await;
    let g = gate(&s["gates"], "gpu_memory_used").expect("gate");
    assert_eq!(g["verdict"], "inconclusive", "{g:#}");
    assert!(
        g["reason"].as_str().unwrap_or_default().contains("503"),
        "{g:#}"
    );
    let (s, back_at) = watch.until(&gw, "rollback", |s| is(s, "Previous")).await;
    // The rollback names the gate, the page and its answer.
    let want = format!(
        "signals unreadable 3 times in a row: gpu_memory_used: {}/metrics: answered HTTP 503",
        front.url()
    );
    assert_eq!(reason(&s), want, "{s:#}");
    assert_eq!(s["weight"], "0%", "{s:#}");
    // The 1 s step passed long before: inconclusive never promoted.
    watch.only(
        &["Deploy", "ValidateHealth", "Canary(0)", "Previous"],
        "down",
    );
    eprintln!(
        "metric_errors abort: rolled back {:?} after the first unreadable evaluation",
        back_at - step_at
    );
    let sent = assert_candidate_gets_nothing(&gw, &sim, load, "down").await;
    assert!(all_ok(&sent, "down") > 0, "step 1 should have served users");
    drop(gw);
    drop(front);
    stable.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_candidate_without_metrics_reads_gpu_memory_from_its_gpu_metrics_page() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let sim = start_sim("candidate", "m", |_| {}).await;
    // A plain OpenAI server with no `/metrics` of its own; its GPU memory is on another page.
    let front = Front::start(&sim, Page::Down).await;
    let plan = plan(
        "[{ weight: 20%, for: 1s }]",
        "{ gpu_memory_used: { max: 92% } }",
        ", metric_errors: { limit: 3, then: abort }",
    );
    let vllm = format!(
        "engine: vllm, revision: v2, gpu_metrics: [\"{}/metrics\"]",
        front.url()
    );
    let openai = format!(
        "engine: openai, revision: v2, gpu_metrics: [\"{}/metrics\"]",
        sim.url()
    );
    let config = rollout_config(&stable, &front.url(), &plan).replace(&vllm, &openai);
    assert!(config.contains(&openai), "{config}");
    let gw = Gateway::start(&config);
    let mut watch = Watch::default();
    let (s, _) = watch
        .until(&gw, "Full or a rollback", |s| {
            is(s, "Full") || is(s, "Previous")
        })
        .await;
    assert!(is(&s, "Full"), "{s:#}");
    let g = gate(&s["transition_gates"], "gpu_memory_used").expect("gate");
    assert_eq!(g["verdict"], "pass", "{g:#}");
    drop(gw);
    drop(front);
    stable.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_metrics_hold_the_step_and_never_promote_until_they_come_back() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let sim = start_sim("candidate", "m", |_| {}).await;
    let front = Front::start(&sim, Page::Down).await;
    let step = Duration::from_secs(2);
    let plan = plan(
        "[{ weight: 20%, for: 2s }]",
        "{ gpu_memory_used: { max: 92% } }",
        ", metric_errors: { limit: 3, then: hold }",
    );
    let gw = Gateway::start(&rollout_config(&stable, &front.url(), &plan));
    let load = Load::start(&gw, "hold", 2, false, Duration::from_millis(5));
    let mut watch = Watch::default();
    watch
        .until(&gw, "holding in step 1", |s| {
            is(s, "Canary(0)") && reason(s).starts_with("holding: signals unreadable")
        })
        .await;
    // Three step durations more: still in step 1 at 20 %, the gate inconclusive with
    // `metric_error`, the rollout marked Stalled.
    watch
        .holds(&gw, step * 3, "held in step 1", |s| {
            let g = gate(&s["gates"], "gpu_memory_used");
            is(s, "Canary(0)")
                && s["weight"] == "20%"
                && reason(s).starts_with("holding: signals unreadable")
                && g.is_some_and(|g| g["metric_error"] == true && g["verdict"] == "inconclusive")
                && s["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Stalled" && c["status"] == "True")
                })
        })
        .await;
    watch.only(&["Deploy", "ValidateHealth", "Canary(0)"], "hold");
    // The exporter comes back: the gate passes and the held rollout goes on to Full.
    *front.page.lock().expect("page") = Page::Sim;
    let back = Instant::now();
    let (s, full_at) = watch.until(&gw, "Full", |s| is(s, "Full")).await;
    assert_eq!(s["weight"], "100%", "{s:#}");
    eprintln!(
        "metric_errors hold: held {:?} past a 2 s step; Full {:?} after /metrics came back",
        step * 3,
        full_at - back
    );
    let sent = load.finish().await;
    assert!(all_ok(&sent, "hold") > 0, "step 1 should have served users");
    drop(gw);
    drop(front);
    stable.shutdown().await;
    sim.shutdown().await;
}
