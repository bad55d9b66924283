//! The fault suite: whole studies through `reproduce` against a fault-injecting server on
//! loopback (`fault_server`), for OpenAI and Together. A run through 10% faults of every
//! kind must end with exactly the files of a fault-free run, with no job, upload or
//! endpoint created twice and every retry accounted in `run.json`; a run killed with
//! SIGKILL at random points must resume to the same files without repeating a paid call;
//! quota exhaustion must stop a run at once.

mod common;
mod fault_server;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use fault_server::{FAULTS, FaultConfig, FaultServer, splitmix};

/// The key the tests use; never a real one.
const TEST_KEY: &str = "sk-test-NOT-A-REAL-KEY-fault";

#[derive(Clone, Copy, PartialEq)]
enum Provider {
    OpenAi,
    Together,
}

/// `reproduce` on a small slice of the study: 3 languages x 2 domains, 2 fine-tuned models.
fn args(provider: Provider, out: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "--out",
        out.to_str().unwrap(),
        "--languages",
        "en,de,yo",
        "--domains",
        "stem,medical",
        "--train-slices",
        "en-stem,yo-medical",
        "--grader",
        "regex",
        "--max-requests-per-minute",
        "60000",
        "--poll-interval",
        "0.02",
        "--yes",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match provider {
        Provider::OpenAi => a.extend(["--provider".into(), "openai".into()]),
        Provider::Together => a.extend([
            "--provider".into(),
            "together".into(),
            "--base-model".into(),
            "Qwen/Qwen2.5-7B-Instruct".into(),
        ]),
    }
    a
}

fn start(provider: Provider, out: &Path, server: &FaultServer) -> std::process::Child {
    start_with(provider, out, server, &[])
}

fn child_output(child: &mut std::process::Child) -> Output {
    use std::io::Read;
    let status = child.wait().unwrap();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

fn start_with(
    provider: Provider,
    out: &Path,
    server: &FaultServer,
    extra: &[&str],
) -> std::process::Child {
    let url = server.base_url();
    // Short client timeouts, so that an injected hang costs 2 s, not 120.
    let env: Vec<(&str, &str)> = match provider {
        Provider::OpenAi => vec![
            ("OPENAI_API_KEY", TEST_KEY),
            ("OPENAI_BASE_URL", &url),
            ("OPENAI_TIMEOUT_SECS", "2"),
        ],
        Provider::Together => vec![
            ("TOGETHER_API_KEY", TEST_KEY),
            ("TOGETHER_BASE_URL", &url),
            ("TOGETHER_TIMEOUT_SECS", "2"),
        ],
    };
    let mut a = args(provider, out);
    a.extend(extra.iter().map(|s| s.to_string()));
    spawn_example(
        "reproduce",
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &env,
    )
}

fn run(provider: Provider, out: &Path, server: &FaultServer) -> Output {
    start(provider, out, server).wait_with_output().unwrap()
}

/// The files that carry a study's results.
fn results(out: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> =
        ["models.json", "report.md", "summary.json", "grid.csv"]
            .iter()
            .map(|f| {
                let p = out.join(f);
                let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                (PathBuf::from(f), bytes)
            })
            .collect();
    files.extend(
        snapshot_dir(&out.join("outcomes"))
            .into_iter()
            .map(|(p, b)| (Path::new("outcomes").join(p), b)),
    );
    files
}

fn assert_same_results(reference: &Path, out: &Path) {
    let (a, b) = (results(reference), results(out));
    assert_eq!(
        a.iter().map(|f| &f.0).collect::<Vec<_>>(),
        b.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{} differs from the fault-free run", name.display());
    }
    // 3 models (base, en-stem, yo-medical) on 6 test sets.
    assert_eq!(a.iter().filter(|f| f.0.starts_with("outcomes")).count(), 3);
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// A fault-free run of the same study, for comparison.
fn reference(provider: Provider, dir: &Path) -> PathBuf {
    let server = FaultServer::start(FaultConfig::default());
    let out = dir.join("reference");
    let o = run(provider, &out, &server);
    assert!(o.status.success(), "{}", describe(&o));
    out
}

fn faulty_run_matches_a_clean_one(provider: Provider, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let reference = reference(provider, dir.path());
    let server = FaultServer::start(FaultConfig {
        rate: 0.10,
        seed: 20_261_129,
        // Every upload, job, batch and endpoint creation also loses its first answer.
        fault_first_writes: true,
        ..FaultConfig::default()
    });
    let out = dir.path().join("faulty");
    let mut child = start_with(provider, &out, &server, extra);
    let o = child_output(&mut child);
    assert!(o.status.success(), "{}", describe(&o));
    if std::env::var("FAULTS_DEBUG").is_ok() {
        eprintln!("{}", String::from_utf8_lossy(&o.stderr));
    }
    let stats = server.stats();
    eprintln!("{}", stats.summary());
    assert_same_results(&reference, &out);
    // Every kind of fault was met, and survived.
    for kind in FAULTS {
        assert!(
            stats.faults.get(kind).copied().unwrap_or(0) > 0,
            "no {kind}"
        );
    }
    // No write was repeated, although many were answered with a fault after they acted.
    assert_eq!(stats.job_creations.len(), 2);
    assert!(
        stats.job_creations.values().all(|&n| n == 1),
        "{}",
        stats.summary()
    );
    assert!(
        stats.uploads.values().all(|&n| n == 1),
        "{}",
        stats.summary()
    );
    if !extra.is_empty() {
        assert_eq!(stats.batch_creations.len(), 3);
        assert!(
            stats.batch_creations.values().all(|&n| n == 1),
            "{}",
            stats.summary()
        );
    }
    if provider == Provider::Together {
        assert_eq!(stats.endpoint_starts.len(), 2);
        assert!(
            stats.endpoint_starts.values().all(|&n| n == 1),
            "{}",
            stats.summary()
        );
        assert!(server.running_endpoints().is_empty());
    }
    // Each injected fault cost one retry, and run.json counts them all. (A request that a
    // loaded machine slows past the client's timeout is a real transient failure too, and
    // is retried and counted: hence the small slack above.)
    let injected: u64 = stats.faults.values().sum();
    let run = read_json(&out.join("run.json"));
    let total = run["retries"]["total"].as_u64().unwrap();
    assert!(
        (injected..=injected + 2).contains(&total),
        "{injected} faults, retries {}",
        run["retries"]
    );
    assert_eq!(
        run["fingerprint"],
        read_json(&reference.join("run.json"))["fingerprint"]
    );
    assert!(!String::from_utf8_lossy(&o.stderr).contains(TEST_KEY));
}

#[test]
fn openai_study_through_ten_percent_faults_matches_a_clean_run() {
    faulty_run_matches_a_clean_one(Provider::OpenAi, &[]);
}

#[test]
fn openai_batch_study_through_ten_percent_faults_matches_a_clean_run() {
    faulty_run_matches_a_clean_one(Provider::OpenAi, &["--batch"]);
}

#[test]
fn together_study_through_ten_percent_faults_matches_a_clean_run() {
    faulty_run_matches_a_clean_one(Provider::Together, &[]);
}

/// Starts the study, waits until `ready` says the server is at the chosen point, and kills
/// the process with SIGKILL. Returns whether the kill landed before the run finished.
fn kill_when(
    provider: Provider,
    out: &Path,
    server: &FaultServer,
    ready: impl Fn(&fault_server::Stats) -> bool,
) -> bool {
    let mut child = start(provider, out, server);
    let t = Instant::now();
    while !ready(&server.stats()) && t.elapsed() < Duration::from_secs(120) {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let finished = child.try_wait().unwrap().is_some();
    child.kill().unwrap_or(()); // SIGKILL
    child.wait().unwrap();
    !finished
}

fn killed_runs_resume_without_repeating_a_paid_call(provider: Provider, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let reference = reference(provider, dir.path());
    let server = FaultServer::start(FaultConfig {
        polls_to_finish: 8,
        ..FaultConfig::default()
    });
    let out = dir.path().join("killed");
    let mut rng = seed;
    // During fine-tuning: after a random number of requests before the first chat.
    let k1 = 3 + splitmix(&mut rng) % 10;
    let landed = kill_when(provider, &out, &server, |s| s.requests >= k1);
    assert!(landed, "the kill during fine-tuning came too late");
    assert!(server.stats().chats.is_empty(), "k1 = {k1}");
    // During evaluation: after a random number of answers (the study asks 18 x 11..30).
    let k2 = 20 + splitmix(&mut rng) % 200;
    let landed = kill_when(provider, &out, &server, |s| {
        s.chats.values().sum::<u64>() >= k2
    });
    assert!(landed, "the kill during evaluation came too late");
    let o = run(provider, &out, &server);
    assert!(o.status.success(), "{}", describe(&o));
    assert_same_results(&reference, &out);
    let stats = server.stats();
    // No job or upload twice; at most the requests in flight at the kill (8 at once) were
    // answered twice, since the killed process never received them.
    assert!(
        stats.job_creations.values().all(|&n| n == 1),
        "{}",
        stats.summary()
    );
    assert!(
        stats.uploads.values().all(|&n| n == 1),
        "{}",
        stats.summary()
    );
    assert!(stats.repeated_chats() <= 8, "{}", stats.repeated_chats());
    if provider == Provider::Together {
        assert!(
            stats.endpoint_starts.values().all(|&n| n == 1),
            "{}",
            stats.summary()
        );
        assert!(server.running_endpoints().is_empty());
    }
}

#[test]
fn openai_study_killed_twice_resumes_to_the_same_results() {
    killed_runs_resume_without_repeating_a_paid_call(Provider::OpenAi, 7);
}

#[test]
fn together_study_killed_twice_resumes_to_the_same_results() {
    killed_runs_resume_without_repeating_a_paid_call(Provider::Together, 11);
}

fn quota_stops_at_once(provider: Provider) {
    let dir = tempfile::tempdir().unwrap();
    let server = FaultServer::start(FaultConfig {
        quota_after_chats: Some(10),
        ..FaultConfig::default()
    });
    let out = dir.path().join("quota");
    let o = run(provider, &out, &server);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("quota exhausted"), "{err}");
    assert!(err.contains("You exceeded your current quota"), "{err}");
    assert!(!err.contains("retrying"), "{err}");
    // Only the requests already in flight (8 at once) met the refusal: no retry storm.
    let stats = server.stats();
    assert!(
        (1..=8).contains(&stats.quota_refusals),
        "{}",
        stats.quota_refusals
    );
    assert!(!out.join("run.json").exists());
    if provider == Provider::Together {
        assert!(server.running_endpoints().is_empty());
    }
}

#[test]
fn openai_quota_exhaustion_stops_the_run_at_once() {
    quota_stops_at_once(Provider::OpenAi);
}

#[test]
fn together_quota_exhaustion_stops_the_run_at_once() {
    quota_stops_at_once(Provider::Together);
}
