//! End-to-end tests: the real `rollgate` binary in front of real simulators, on loopback.
//! Every listener binds `127.0.0.1:0`; every test stops by itself.

#[path = "e2e/support.rs"]
mod support;

#[path = "e2e/access_log.rs"]
mod access_log;

#[path = "e2e/errors.rs"]
mod errors;

#[path = "e2e/split.rs"]
mod split;

#[path = "e2e/shadow.rs"]
mod shadow;

#[path = "e2e/streaming.rs"]
mod streaming;

#[path = "e2e/reload.rs"]
mod reload;

#[path = "e2e/reload_status.rs"]
mod reload_status;

#[path = "e2e/lifecycle.rs"]
mod lifecycle;

#[path = "e2e/protocols.rs"]
mod protocols;

#[path = "e2e/cli.rs"]
mod cli;

#[path = "e2e/timeouts.rs"]
mod timeouts;

#[path = "e2e/smuggling.rs"]
mod smuggling;

#[path = "e2e/rollout.rs"]
mod rollout;

#[path = "e2e/gpu_agent.rs"]
mod gpu_agent;

#[path = "e2e/gates.rs"]
mod gates;

#[path = "e2e/ctl.rs"]
mod ctl;

#[path = "e2e/promql.rs"]
mod promql;

#[path = "e2e/deploy.rs"]
mod deploy;

#[path = "e2e/pr.rs"]
mod pr;

#[path = "e2e/breakglass.rs"]
mod breakglass;

#[path = "e2e/breakglass_idle.rs"]
mod breakglass_idle;

#[path = "e2e/git.rs"]
mod git;

#[path = "e2e/loadtest.rs"]
mod loadtest;

#[path = "e2e/gitops.rs"]
mod gitops;

#[path = "e2e/static_split.rs"]
mod static_split;

#[path = "e2e/sim_tools.rs"]
mod sim_tools;

#[path = "e2e/scale.rs"]
mod scale;

#[path = "e2e/fallback.rs"]
mod fallback;

#[path = "e2e/admin_reads.rs"]
mod admin_reads;
