//! Many models, no traffic: a gateway with 5,000 static splits (QA's shape: a candidate at
//! `weight: 10%`, no rollout plan) sits idle, answers `/rollouts` and `/status` with every
//! model, serves, and exits promptly on SIGTERM. Its control loop was quadratic in the models:
//! 72 % of a core idle at 5,000, both cores and a minute-long exit at 50,000.

use std::time::{Duration, Instant};

use crate::support::*;

const MODELS: usize = 5_000;
/// Long enough for the first steps (every model evaluated once) to be over before sampling.
const SETTLE: Duration = Duration::from_secs(2);
/// How long idle CPU is sampled.
const SAMPLE: Duration = Duration::from_secs(3);
/// Idle CPU allowed, as a share of a core: about 10× what an unoptimised build uses (≈ 1-2 %);
/// the quadratic loop used 70 % optimised. CPU time, not wall time: a loaded machine slows
/// the gateway, it does not make it work more.
const IDLE_MAX: f64 = 0.25;

fn many_models(stable: &str, candidate: &str) -> String {
    use std::fmt::Write as _;
    let mut yaml = String::from(
        "listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\nworkers: 1\ndrain_timeout: 5s\nmodels:\n",
    );
    for i in 0..MODELS {
        let _ = write!(
            yaml,
            "  - name: model-{i:05}\n    stable: {{ endpoints: [\"{stable}\"] }}\n    \
             candidate: {{ endpoints: [\"{candidate}\"], revision: v2 }}\n    weight: 10%\n"
        );
    }
    yaml
}

#[tokio::test]
async fn a_gateway_with_5000_static_splits_idles_answers_and_exits_promptly() {
    let _heavy = heavy().await;
    let stable = start_sim("stable", "any", |a| a.any_model = true).await;
    let candidate = start_sim("candidate", "any", |a| a.any_model = true).await;
    let mut gw = Gateway::start(&many_models(&stable.url(), &candidate.url()));
    let pid = pid_running(&gw.config.to_string_lossy());

    tokio::time::sleep(SETTLE).await;
    let (ticks, began) = (cpu_ticks(pid), Instant::now());
    tokio::time::sleep(SAMPLE).await;
    let used = (cpu_ticks(pid) - ticks) as f64 / clock_ticks_per_second();
    let share = used / began.elapsed().as_secs_f64();
    assert!(
        share < IDLE_MAX,
        "idle with {MODELS} models: {:.1} % of a core",
        share * 100.0
    );

    let c = client();
    let rollouts = get(&c, &gw.admin_url("/rollouts")).await;
    assert_eq!(rollouts.status, 200, "{}", rollouts.text());
    let rollouts = rollouts.json();
    let all = rollouts.as_array().expect("a list");
    assert_eq!(all.len(), MODELS);
    let last = &all[MODELS - 1];
    assert_eq!(
        (
            last["model"].as_str(),
            phase(last).as_str(),
            last["weight"].as_str()
        ),
        (Some("model-04999"), "Idle", Some("10%"))
    );
    let status = gw.status().await;
    assert_eq!(status["models"].as_array().map(Vec::len), Some(MODELS));
    let reply = send(
        &c,
        &gw.url("/v1/chat/completions"),
        &[],
        chat("model-04999", "hello", false),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    gw.signal("TERM");
    let term = Instant::now();
    // Nothing in flight: the drain ends at once. 6× the drain timeout before calling it hung.
    let exit = gw.wait(Duration::from_secs(30)).await;
    assert!(exit.success(), "{exit:?}; logs:\n{}", gw.logs());
    eprintln!(
        "{MODELS} models: idle {:.1} % of a core, exit {:?} after SIGTERM",
        share * 100.0,
        term.elapsed()
    );
}

/// The pid of the `rollgate run` process whose command line names `config` (its unique temp
/// path).
fn pid_running(config: &str) -> u32 {
    let mine = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(config)
                .then_some(pid)
        });
    mine.unwrap_or_else(|| panic!("no process running {config}"))
}

/// User plus system CPU time of `pid`, in clock ticks (`/proc/PID/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let field = |n: usize| -> u64 { fields[n - 3].parse().expect("ticks") };
    field(14) + field(15)
}

fn clock_ticks_per_second() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK")
}
