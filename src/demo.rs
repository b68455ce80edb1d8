//! `rollgate demo`: two simulated model servers (stable and candidate), the gateway in front,
//! live traffic from simulated users, a hot reload that raises the candidate's weight, and live
//! per-variant counts. `rollgate sim`: one simulator in the foreground.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rollgate_loadtest::sim::{self, Sim, SimArgs};
use rollgate_proxy::ModelObservation;
use tokio::net::TcpListener;

use crate::gateway::Gateway;

#[derive(clap::Args, Debug)]
pub(crate) struct DemoArgs {
    /// How long the demo runs before it stops by itself.
    #[arg(long, default_value = "30", value_name = "SECONDS")]
    duration: u64,
    /// Requests per second sent by simulated users.
    #[arg(long, default_value = "40")]
    rate: u32,
    /// Keep the temporary directory (config file) after the demo ends.
    #[arg(long)]
    keep: bool,
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let stable = start_sim("stable", Duration::from_millis(30)).await?;
    let candidate = start_sim("candidate", Duration::from_millis(24)).await?;
    let dir = std::env::temp_dir().join(format!("rollgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = dir.join("rollgate.yaml");
    std::fs::write(&config, demo_config(&stable, &candidate, "10%"))?;
    let gw = Gateway::start(config.clone()).await?;
    println!(
        "rollgate demo — stops by itself after {}s (Ctrl-C stops it sooner)\n",
        args.duration
    );
    println!(
        "  stable simulator     {}  (model chat-small, revision v1)",
        stable.url()
    );
    println!("  candidate simulator  {}  (revision v2)", candidate.url());
    println!("  gateway data plane   http://{}", gw.data);
    println!(
        "  admin                http://{}/metrics  /status  /healthz",
        gw.admin
    );
    println!("  config               {}\n", config.display());
    println!("Try it:");
    println!(
        "  curl -s http://{}/v1/chat/completions -H 'content-type: application/json' -H 'x-user-id: alice' \\\n       -d '{{\"model\":\"chat-small\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'\n",
        gw.data
    );
    println!("Candidate weight 10% with sticky cohorts (x-user-id), 20% of stable traffic mirrored to the candidate.\n");

    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let traffic = tokio::spawn(drive(client, gw.data, args.rate));
    let half = args.duration / 2;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    for second in 1..=args.duration {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => break,
        }
        if second == half {
            std::fs::write(&config, demo_config(&stable, &candidate, "30%"))?;
            println!(
                "  -> config changed on disk: candidate weight 10% -> 30% (hot reload, no restart)"
            );
        }
        let obs = gw.proxy.observe();
        if let Some(o) = obs.iter().find(|o| &*o.model == "chat-small") {
            println!(
                "  t={second:>3}s  {}  revision {}",
                counts(o),
                short(gw.proxy.snapshot().revision())
            );
        }
    }
    traffic.abort();
    println!("\nstopping: draining the gateway and the simulators");
    gw.shutdown().await;
    stable.shutdown().await;
    candidate.shutdown().await;
    if args.keep {
        println!("kept {}", dir.display());
    } else if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove the demo directory");
    }
    Ok(())
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

async fn start_sim(name: &str, ttft: Duration) -> anyhow::Result<Sim> {
    let args = SimArgs {
        model: "chat-small".into(),
        name: Some(name.into()),
        ttft,
        tpot: Duration::from_millis(4),
        output_tokens: 24,
        ..SimArgs::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    sim::start(args, listener).await
}

fn demo_config(stable: &Sim, candidate: &Sim, weight: &str) -> String {
    format!(
        "# Written by `rollgate demo`.\n\
         listen: 127.0.0.1:0\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         workers: 1\n\
         drain_timeout: 5s\n\
         models:\n\
         \x20 - name: chat-small\n\
         \x20   default: true\n\
         \x20   stable:    {{ endpoints: [\"{}\"], engine: vllm, revision: v1 }}\n\
         \x20   candidate: {{ endpoints: [\"{}\"], engine: vllm, revision: v2 }}\n\
         \x20   weight: {weight}\n\
         \x20   cohort: {{ header: x-user-id }}\n\
         \x20   shadow: {{ sample: 20%, max_inflight: 32 }}\n",
        stable.url(),
        candidate.url()
    )
}

/// Open-loop traffic: `rate` requests per second from 500 users, every third one streamed.
async fn drive(client: HttpClient, addr: std::net::SocketAddr, rate: u32) {
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
        let client = client.clone();
        tokio::spawn(async move {
            if let Ok(resp) = client.request(req).await {
                // The demo only needs the gateway to observe complete exchanges.
                let _ = resp.into_body().collect().await;
            }
        });
    }
}

fn counts(o: &ModelObservation) -> String {
    let v = |x: &rollgate_proxy::VariantObservation| x.status.iter().sum::<u64>();
    let p50 = o
        .stable
        .latency
        .quantile(0.5)
        .map_or("-".into(), |s| format!("{:.0}ms", s * 1e3));
    format!(
        "stable {:>5}  candidate {:>5}  shadow {:>5} (dropped {})  errors {}  stable p50 {p50}",
        v(&o.stable),
        v(&o.candidate),
        v(&o.shadow),
        o.shadow_drops.iter().sum::<u64>(),
        o.stable.status[4] + o.stable.status[5] + o.candidate.status[4] + o.candidate.status[5],
    )
}

fn short(rev: &str) -> &str {
    rev.get(..16).unwrap_or(rev)
}
