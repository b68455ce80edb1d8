//! Faults set at start and at run time, over HTTP and through the handle.

use super::*;

fn streaming(prompt: &str) -> Value {
    let mut request = chat(prompt);
    request["stream"] = json!(true);
    request
}

#[tokio::test(start_paused = true)]
async fn faults_change_at_run_time_over_http() {
    let sim = sim(args()).await;
    assert_eq!(
        post(&sim, "/v1/chat/completions", &chat("a")).await.status,
        StatusCode::OK
    );

    let set = post(
        &sim,
        "/sim/faults",
        &json!({"error_rate": 1.0, "extra_latency": 250}),
    )
    .await;
    assert_eq!(set.status, StatusCode::OK);
    assert_eq!(set.json()["extra_latency"], "250ms");
    let read = call(&sim, Method::GET, "/sim/faults", "").await.json();
    assert_eq!(read["error_rate"], 1.0);
    assert_eq!(sim.faults().error_rate, Ratio::ONE);
    for _ in 0..5 {
        let reply = post(&sim, "/v1/chat/completions", &chat("a")).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(reply.error()["type"], "server_error");
    }
    assert!(sim
        .metrics_text()
        .contains("rollgate_sim_faults_injected_total{fault=\"error\"} 5\n"));

    // A bad body names every bad field and changes nothing.
    let bad = post(
        &sim,
        "/sim/faults",
        &json!({"error_rate": 3, "stall": "later"}),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let message = bad.error()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("error_rate") && message.contains("stall"),
        "{message}"
    );
    let unknown = post(&sim, "/sim/faults", &json!({"eror_rate": 1})).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(sim.faults().error_rate, Ratio::ONE);

    assert_eq!(
        post(&sim, "/sim/faults", &json!({})).await.status,
        StatusCode::OK
    );
    assert_eq!(
        post(&sim, "/v1/chat/completions", &chat("a")).await.status,
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn fail_health_through_the_handle() {
    let sim = sim(args()).await;
    sim.set_faults(Faults {
        fail_health: true,
        ..Faults::default()
    });
    let health = call(&sim, Method::GET, "/health", "").await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    health.error();
    sim.set_faults(Faults::default());
    assert_eq!(
        call(&sim, Method::GET, "/health", "").await.status,
        StatusCode::OK
    );
}

/// The readiness path the gateway checks for each engine: Triton's KServe v2 routes (200 or
/// 400 with an empty body, as Triton answers), `/health` for the others.
#[tokio::test(start_paused = true)]
async fn each_engine_serves_the_health_path_the_gateway_checks() {
    let triton = sim(SimArgs {
        engine: Engine::Triton,
        ..args()
    })
    .await;
    for path in ["/v2/health/ready", "/v2/health/live"] {
        let reply = call(&triton, Method::GET, path, "").await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert!(reply.body.is_empty(), "{path}: {:?}", reply.body);
    }
    // Kept for every engine, as it always was.
    let health = call(&triton, Method::GET, "/health", "").await;
    assert_eq!(health.status, StatusCode::OK);
    let post = call(&triton, Method::POST, "/v2/health/ready", "").await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    triton.set_faults(Faults {
        fail_health: true,
        ..Faults::default()
    });
    let ready = call(&triton, Method::GET, "/v2/health/ready", "").await;
    assert_eq!(ready.status, StatusCode::BAD_REQUEST, "not ready");
    assert!(ready.body.is_empty(), "{:?}", ready.body);
    let live = call(&triton, Method::GET, "/v2/health/live", "").await;
    assert_eq!(live.status, StatusCode::OK, "up, only not ready");
    triton.set_faults(Faults::default());
    let ready = call(&triton, Method::GET, "/v2/health/ready", "").await;
    assert_eq!(ready.status, StatusCode::OK);

    for engine in [Engine::Vllm, Engine::Sglang, Engine::Tgi] {
        let other = sim(SimArgs { engine, ..args() }).await;
        let health = call(&other, Method::GET, "/health", "").await;
        assert_eq!(health.status, StatusCode::OK, "{engine:?}");
        let v2 = call(&other, Method::GET, "/v2/health/ready", "").await;
        assert_eq!(
            v2.status,
            StatusCode::NOT_FOUND,
            "{engine:?}: only Triton serves it"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_truncated_stream_lacks_done() {
    let faults = Faults {
        truncate_rate: Ratio::ONE,
        ..Faults::default()
    };
    let sim = sim(SimArgs { faults, ..args() }).await;
    let streamed = stream(&sim, "/v1/chat/completions", &streaming("cut me")).await;
    assert_eq!(streamed.status, StatusCode::OK);
    assert!(
        !streamed.clean_end,
        "the body ends in an error, not a clean end"
    );
    let events = streamed.events();
    // Half of the 16 tokens went out, then the connection was cut.
    assert_eq!(events.len(), 8, "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
}

#[tokio::test(start_paused = true)]
async fn an_error_event_mid_stream() {
    let faults = Faults {
        error_event_rate: Ratio::ONE,
        ..Faults::default()
    };
    let sim = sim(SimArgs { faults, ..args() }).await;
    let streamed = stream(
        &sim,
        "/v1/completions",
        &json!({"prompt": "p", "stream": true}),
    )
    .await;
    assert!(streamed.clean_end);
    let events = streamed.events();
    assert_eq!(events.len(), 10, "8 tokens, the error, [DONE]: {events:?}");
    let error: Value = serde_json::from_str(&events[8]).unwrap();
    assert_eq!(error["error"]["type"], "server_error");
    assert_eq!(events[9], "[DONE]");
}

#[tokio::test(start_paused = true)]
async fn wrong_answers_differ_with_the_same_shape() {
    let sim = sim(args()).await;
    let text = |r: Reply| {
        r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let right = text(post(&sim, "/v1/chat/completions", &chat("q")).await);
    sim.set_faults(Faults {
        wrong_answers: Ratio::ONE,
        ..Faults::default()
    });
    let wrong = text(post(&sim, "/v1/chat/completions", &chat("q")).await);
    assert_ne!(right, wrong);
    assert_eq!(right.split(' ').count(), wrong.split(' ').count());
    let streamed = stream(&sim, "/v1/chat/completions", &streaming("q")).await;
    assert_eq!(
        streamed.content(),
        wrong,
        "streams and whole answers agree on the wrong text"
    );
}

#[tokio::test(start_paused = true)]
async fn error_rate_is_a_seeded_share() {
    const N: usize = 200;
    let faults = Faults {
        error_rate: Ratio::new(0.5).unwrap(),
        ..Faults::default()
    };
    let pattern = |sim: Sim| async move {
        let mut errors = Vec::with_capacity(N);
        for _ in 0..N {
            let reply = post(
                &sim,
                "/v1/completions",
                &json!({"prompt": "p", "max_tokens": 1}),
            )
            .await;
            errors.push(reply.status == StatusCode::INTERNAL_SERVER_ERROR);
        }
        errors
    };
    let a = pattern(
        sim(SimArgs {
            faults: faults.clone(),
            ..args()
        })
        .await,
    )
    .await;
    let b = pattern(sim(SimArgs { faults, ..args() }).await).await;
    assert_eq!(a, b, "the same seed fails the same requests");
    // Binomial(200, 0.5): standard deviation about 7; allow four of them.
    let failed = a.iter().filter(|e| **e).count();
    assert!((100 - 28..=100 + 28).contains(&failed), "{failed}");
}
