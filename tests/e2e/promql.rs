//! PromQL gates against a real Prometheus server (Debian's `prometheus`) scraping the gateway.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rollgate_loadtest::sim::{Faults, Ratio};

use crate::support::*;

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Already exited is fine.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promql_gate_passes_on_prometheus_data_and_rolls_back_when_it_breaches() {
    let _heavy = heavy().await;
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let dir = temp_dir("promql");
    // A free port for Prometheus: bind, note it, release.
    let prom_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let plan = format!(
        "    cohort: {{ header: x-user-id }}\n    rollout:\n      steps: [ {{ weight: 50%, for: 10m }} ]\n      gates:\n        promql:\n          url: http://{prom_addr}\n          timeout: 1s\n          queries:\n            - {{ name: candidate-5xx, query: 'sum(rollgate_proxy_requests_total{{model=\"$model\",variant=\"candidate\",status_class=\"5xx\"}})', max: 0 }}\n      metric_errors: {{ limit: 1000, then: hold }}\n      min_samples: 10\n"
    );
    // Passive ejection would act first on a failing candidate; this test is about the PromQL gate.
    let top = "ejection: { consecutive_failures: 100000 }\n";
    let gw = Gateway::start(&config(&stable, Some(&candidate), &plan, top));
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nscrape_configs:\n  - job_name: rollgate\n    static_configs: [ {{ targets: ['{}'] }} ]\n",
            gw.admin
        ),
    )
    .expect("prometheus config");
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus must be installed (scripts/install-test-deps installs Debian's package)"),
    );
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let mut n = 0u32;
    // Traffic until the gate has read a real value from Prometheus and passes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let passing = loop {
        for _ in 0..10 {
            n += 1;
            let r = send(
                &c,
                &url,
                &[("x-user-id", &format!("u{n}"))],
                chat("m", "hi", false),
            )
            .await;
            assert_eq!(r.status, 200);
        }
        let s = rollout_status(&gw).await;
        let gate = s["gates"]["results"]
            .as_array()
            .and_then(|r| r.iter().find(|g| g["gate"] == "promql"))
            .cloned();
        if let Some(g) = gate.filter(|g| g["verdict"] == "pass") {
            break g;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the PromQL gate never passed: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(passing["value"], 0.0, "{passing:#}");
    assert_eq!(rollout_status(&gw).await["phase"], "Canary");
    // Now the candidate fails; Prometheus scrapes the 5xx count and the gate rolls back.
    candidate.set_faults(Faults {
        error_rate: Ratio::new(0.5).expect("ratio"),
        ..Faults::default()
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let s = loop {
        for _ in 0..10 {
            n += 1;
            // Half the candidate's answers are 500 now; what matters is the gateway's reaction.
            let _ = send(
                &c,
                &url,
                &[("x-user-id", &format!("u{n}"))],
                chat("m", "hi", false),
            )
            .await;
        }
        let s = rollout_status(&gw).await;
        if s["phase"] == "Previous" {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never rolled back: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s["weight"], "0%");
    assert!(
        s["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("candidate-5xx"),
        "{s:#}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
