//! `access_log:`: one JSON line per request, on both data planes: who answered it, how, and how
//! fast, as the user saw it; the gateway's own answers too; switched on and off by a reload;
//! the last lines written at exit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// The log's lines once there are at least `n` (bounded wait: the writer flushes every 100 ms).
async fn lines(path: &Path, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let got: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if got.len() >= n {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} lines in {}:\n{text}",
            got.len(),
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config_with_log(plane: &str, stable: &str, candidate: &str, log: &Path) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nworkers: 1\ndata_plane: {plane}\n\
         access_log: {}\nrouting: {{ allow_override: true }}\nmodels:\n  - name: m\n    \
         stable: {{ endpoints: [\"{stable}\"], engine: vllm }}\n    \
         candidate: {{ endpoints: [\"{candidate}\"], engine: vllm, revision: v2 }}\n    weight: 50%\n",
        log.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_a_line_saying_who_answered_and_how_fast() {
    for plane in ["fast", "hyper"] {
        let stable = start_sim("stable", "m", |_| {}).await;
        let cand = start_sim("candidate", "m", |_| {}).await;
        let dir = temp_dir("access");
        let log: PathBuf = dir.join("access.log");
        let gw = Gateway::start(&config_with_log(plane, &stable.url(), &cand.url(), &log));
        let c = client();
        let url = gw.url("/v1/chat/completions?api-key=secret");
        let mut sent = Vec::new();
        for i in 0..8 {
            let id = format!("req-{i}");
            let r = send(
                &c,
                &url,
                &[("x-request-id", &id)],
                chat("m", "hi", i % 2 == 0),
            )
            .await;
            assert_eq!(r.status, 200, "{plane}: {}", r.text());
            let who = r.header("x-rollgate-variant").expect("variant").to_owned();
            sent.push((id, who, r.text().len()));
        }
        // The gateway's own answers: an unknown model, a pinned candidate that is gone.
        let r = send(&c, &url, &[], chat("nope", "hi", false)).await;
        assert_eq!(r.status, 404);
        cand.stop();
        let r = send(
            &c,
            &url,
            &[("x-rollgate-variant", "candidate")],
            chat("m", "hi", false),
        )
        .await;
        assert_eq!(r.status, 502, "{plane}: {}", r.text());

        let got = lines(&log, 10).await;
        assert_eq!(got.len(), 10, "{plane}: one line per request\n{got:#?}");
        let by_status = |status: u64| {
            let all: Vec<&Value> = got.iter().filter(|l| l["status"] == status).collect();
            assert_eq!(all.len(), 1, "{plane}: one {status}\n{got:#?}");
            all[0]
        };
        for (id, who, len) in &sent {
            let line = got
                .iter()
                .find(|l| l["request_id"] == id.as_str())
                .unwrap_or_else(|| panic!("{plane}: no line for {id}\n{got:#?}"));
            assert_eq!(line["request_id"], id.as_str(), "{plane}: {line}");
            assert_eq!(line["method"], "POST");
            assert_eq!(line["path"], "/v1/chat/completions", "no query: {line}");
            assert_eq!(line["model"], "m");
            assert_eq!(line["variant"], who.as_str(), "{plane}: {line}");
            assert_eq!(line["status"], 200);
            assert_eq!(line["fell_back"], false);
            let ep = if who == "stable" {
                stable.url()
            } else {
                cand.url()
            };
            assert_eq!(line["endpoint"], ep.as_str(), "{plane}: {line}");
            assert_eq!(line["bytes"], *len as u64, "{plane}: {line}");
            let ms = |k: &str| line[k].as_f64().unwrap_or_else(|| panic!("{k}: {line}"));
            assert!(
                ms("duration_ms") >= ms("ttfb_ms") && ms("ttfb_ms") > 0.0,
                "{line}"
            );
            let stream = line["ttft_ms"].is_f64();
            assert_eq!(
                stream,
                id.ends_with(['0', '2', '4', '6']),
                "ttft for streams: {line}"
            );
            assert_eq!(
                (&line["failure"], &line["error"]),
                (&Value::Null, &Value::Null)
            );
            assert!(
                line["time"].as_str().is_some_and(|t| t.ends_with('Z')),
                "{line}"
            );
        }
        let unknown = by_status(404);
        assert_eq!(
            (&unknown["status"], &unknown["error"], &unknown["model"]),
            (
                &Value::from(404),
                &Value::from("unknown_model"),
                &Value::Null
            ),
            "{plane}: {unknown}"
        );
        let failed = by_status(502);
        assert_eq!(
            (&failed["status"], &failed["error"], &failed["variant"]),
            (
                &Value::from(502),
                &Value::from("upstream"),
                &Value::from("candidate")
            ),
            "{plane}: {failed}"
        );
        let m = gw.metrics().await;
        assert_eq!(
            metric(
                &m,
                "rollgate_proxy_access_log_lines_total{outcome=\"written\"}"
            ),
            Some(10.0),
            "{plane}\n{m}"
        );
        drop(gw);
        stable.shutdown().await;
        cand.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A reload switches the log off and on; SIGTERM writes the lines still queued before exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_switches_the_log_and_exit_flushes_it() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let dir = temp_dir("access-reload");
    let log = dir.join("access.log");
    let on = config_with_log("fast", &stable.url(), &stable.url(), &log)
        .replace("weight: 50%", "weight: 0%");
    let off = on.replace(&format!("access_log: {}\n", log.display()), "");
    assert_ne!(on, off);
    let mut gw = Gateway::start(&off);
    chat_once(&gw, &[]).await;
    assert_eq!(gw.apply_config(&on).await["result"], "success");
    chat_once(&gw, &[("x-request-id", "second")]).await;
    assert_eq!(lines(&log, 1).await[0]["request_id"], "second");
    assert_eq!(gw.apply_config(&off).await["result"], "success");
    chat_once(&gw, &[]).await;
    assert_eq!(gw.apply_config(&on).await["result"], "success");
    chat_once(&gw, &[("x-request-id", "last")]).await;
    // At once: the writer's next tick has not come yet; the exit writes the line.
    gw.signal("TERM");
    assert!(gw.wait(Duration::from_secs(10)).await.success());
    let text = std::fs::read_to_string(&log).expect("log");
    let ids: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json")["request_id"].to_string())
        .collect();
    assert_eq!(ids, ["\"second\"", "\"last\""], "{text}");
    stable.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A log file moved away (logrotate's default `create`, or a `mv` by hand) gets the lines
/// already written; the gateway notices within about a second and writes the next lines to a
/// new file at the configured path. No signal, no `copytruncate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_file_moved_away_is_reopened_at_its_path() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let dir = temp_dir("access-rotate");
    let log = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let gw = Gateway::start(
        &config_with_log("fast", &stable.url(), &stable.url(), &log)
            .replace("weight: 50%", "weight: 0%"),
    );
    chat_once(&gw, &[("x-request-id", "before")]).await;
    assert_eq!(lines(&log, 1).await[0]["request_id"], "before");
    std::fs::rename(&log, &rotated).expect("rotate");
    // Requests until one lands in a new file at the path (the check runs every second).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut sent = 0;
    while !log.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new file at {} 10 s after the rotation",
            log.display()
        );
        chat_once(&gw, &[("x-request-id", &format!("after-{sent}"))]).await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    chat_once(&gw, &[("x-request-id", "last")]).await;
    let new = loop {
        let got = lines(&log, 1).await;
        if got.iter().any(|l| l["request_id"] == "last") {
            break got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the last request's line is not in the new file: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let old = lines(&rotated, 1).await;
    assert_eq!(old[0]["request_id"], "before");
    // Every line is in exactly one of the two files.
    let ids = |v: &[Value]| -> Vec<String> {
        v.iter()
            .map(|l| l["request_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let (old, new) = (ids(&old), ids(&new));
    assert_eq!(old.len() + new.len(), sent + 2, "old {old:?}, new {new:?}");
    assert!(
        new.iter().all(|id| !old.contains(id)),
        "old {old:?}, new {new:?}"
    );
    drop(gw);
    stable.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
