//! Criterion benchmarks of the rollout driver's step over many models without traffic: the
//! idle step (every second, nothing changed), the step after a reload (every model evaluated
//! again), and the step while one model is in Shadow (its gates evaluated). QA found the idle step quadratic in the models (5,000 static splits: 72 %
//! of a core; README, "Scale"). `fleet_start`: the step in which every model starts a rollout
//! at once (one commit that changes every model's runtime), with the state saved to disk.
//!
//! `cargo bench -p rollgate-benches --bench control_loop -- --quick`; see docs/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use prometheus_client::registry::Registry;
use rollgate_config::Model;
use rollgate_control::rollout::{
    Driver, DriverHandle, Health, ModelSignals, Phase, SignalSource, StateStore, SyntheticRunner,
    SyntheticState,
};
use rollgate_proxy::ProxyHandle;

/// Model counts: QA's 500 to 56,000 range.
const MODELS: [usize; 3] = [500, 5_000, 50_000];

/// Static splits as in QA's report: a candidate at `weight`, no rollout plan.
fn static_splits(n: usize, weight: &str) -> String {
    let mut yaml = String::from("listen: 127.0.0.1:0\nmodels:\n");
    for i in 0..n {
        let _ = write!(
            yaml,
            "  - name: model-{i:05}\n    stable: {{ endpoints: [\"http://127.0.0.1:1\"] }}\n    \
             candidate: {{ endpoints: [\"http://127.0.0.1:2\"], revision: v2 }}\n    \
             weight: {weight}\n"
        );
    }
    yaml
}

/// The same splits, the first model with a rollout plan (held in Shadow for an hour): the step
/// a gateway takes every second while one of its models is being rolled out.
fn one_rollout(n: usize) -> String {
    static_splits(n, "10%").replacen(
        "    weight: 10%\n",
        "    rollout: { shadow: { sample: 10%, for: 1h }, steps: [ { weight: 10%, for: 1h } ] }\n",
        1,
    )
}

/// A healthy candidate with no engine metrics: only a rollout's model is ever asked.
struct NoSignals;

impl SignalSource for NoSignals {
    fn read<'a>(&'a self, _: &'a Model) -> Pin<Box<dyn Future<Output = ModelSignals> + Send + 'a>> {
        Box::pin(std::future::ready(ModelSignals {
            health: Health::Passing,
            promql: Vec::new(),
            queue_time: Ok(None),
            gpu_memory: Ok(None),
        }))
    }
}

fn driver(yaml: &str) -> (ProxyHandle, Driver, DriverHandle) {
    driver_with(yaml, StateStore::new(None))
}

fn driver_with(yaml: &str, store: StateStore) -> (ProxyHandle, Driver, DriverHandle) {
    let proxy = ProxyHandle::new(
        rollgate_config::parse(yaml).expect("config"),
        "rev-1",
        &mut Registry::default(),
    );
    let synthetic: SyntheticRunner =
        Arc::new(|_| Box::pin(std::future::ready(SyntheticState::None)));
    let (driver, handle) = Driver::new(
        proxy.clone(),
        store,
        Arc::new(NoSignals),
        Arc::new(|_| None),
        synthetic,
        Duration::from_secs(1),
    );
    (proxy, driver, handle)
}

fn driver_step(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("driver_step");
    for n in MODELS {
        let (proxy, mut d, _) = driver(&static_splits(n, "10%"));
        rt.block_on(d.step());
        g.bench_function(BenchmarkId::new("idle", n), |b| {
            b.iter(|| rt.block_on(d.step()));
        });
        // A reload: a new config (the same models, another weight), every model evaluated.
        let config = rollgate_config::parse(&static_splits(n, "20%")).expect("config");
        g.bench_function(BenchmarkId::new("after_reload", n), |b| {
            b.iter_batched(
                || proxy.apply(config.clone(), "rev-2"),
                |_| rt.block_on(d.step()),
                BatchSize::PerIteration,
            );
        });
        // One model in Shadow: its gates read its own observations, the rest stay settled.
        let (_proxy, mut d, handle) = driver(&one_rollout(n));
        for _ in 0..3 {
            // Deploy → ValidateHealth → Shadow.
            rt.block_on(d.step());
        }
        let phase = handle
            .status()
            .into_iter()
            .find(|s| s.model == "model-00000");
        assert_eq!(phase.map(|s| s.phase), Some(Phase::Shadow), "in Shadow");
        g.bench_function(BenchmarkId::new("one_rollout", n), |b| {
            b.iter(|| rt.block_on(d.step()));
        });
    }
    g.finish();
}

/// Every model with a rollout plan: their rollouts all start in the first step.
fn fleet(n: usize) -> String {
    static_splits(n, "0%").replace(
        "    weight: 0%\n",
        "    rollout: { shadow: { sample: 10%, for: 1h }, steps: [ { weight: 10%, for: 1h } ] }\n",
    )
}

fn fleet_start(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("rollgate-bench-fleet-{}", std::process::id()));
    let mut g = c.benchmark_group("fleet_start");
    for n in [100, 1_000] {
        let yaml = fleet(n);
        g.bench_function(BenchmarkId::new("first_step", n), |b| {
            b.iter_batched(
                || {
                    let _ = std::fs::remove_dir_all(&dir);
                    driver_with(&yaml, StateStore::new(Some(dir.clone()))).1
                },
                |mut d| {
                    rt.block_on(d.step());
                    d
                },
                BatchSize::PerIteration,
            );
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = control_loop;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10);
    targets = driver_step, fleet_start
}
criterion_main!(control_loop);
