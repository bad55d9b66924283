//! Runs the workspace's example programs as a user would.
#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs example `name` with `args`, in the workspace root.
pub fn run_example(name: &str, args: &[&str]) -> Output {
    run_example_with_stdin(name, args, None)
}

/// The example binary `cargo test` built beside this test binary (`target/<profile>/examples`),
/// so that it runs with the features of the whole workspace's build. Running `cargo run` here
/// instead would resolve features for one package and could rebuild polars.
fn example_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let bin = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    bin.exists().then_some(bin)
}

/// Starts example `name` with `args` and extra environment, without waiting.
pub fn spawn_example(name: &str, args: &[&str], envs: &[(&str, &str)]) -> std::process::Child {
    use std::process::Stdio;
    let mut cmd = command(name);
    cmd.args(args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("example starts")
}

fn command(name: &str) -> Command {
    match example_binary(name) {
        Some(bin) => Command::new(bin),
        None => {
            let mut c = Command::new(env!("CARGO"));
            c.args(["run", "--quiet", "--example", name, "--"]);
            c
        }
    }
}

/// As [`run_example`], feeding `stdin`.
pub fn run_example_with_stdin(name: &str, args: &[&str], stdin: Option<&str>) -> Output {
    run_example_with_env(name, args, &[], stdin)
}

/// As [`run_example_with_stdin`], with extra environment variables.
pub fn run_example_with_env(
    name: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    stdin: Option<&str>,
) -> Output {
    run_with_stdout(name, args, envs, stdin, std::process::Stdio::piped())
}

/// As [`run_example_with_stdin`], with standard output a pipe whose reader has already
/// gone: what `| head -1` leaves once it has its line. Nothing comes back on `stdout`.
pub fn run_example_into_closed_pipe(name: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    run_with_stdout(name, args, &[], stdin, writer.into())
}

fn run_with_stdout(
    name: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    stdin: Option<&str>,
    stdout: std::process::Stdio,
) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut cmd = command(name);
    cmd.args(args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(stdout)
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("cargo runs");
    if let Some(input) = stdin {
        // An example may stop before it has read everything (a closed stdout, a bad line).
        let written = child.stdin.take().unwrap().write_all(input.as_bytes());
        if let Err(e) = written {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
    }
    child.wait_with_output().expect("example finishes")
}

/// The environment of a user with `home` as `HF_HOME` and `endpoint` as the Hub; the
/// variables that could point elsewhere are emptied (empty counts as unset).
pub fn hub_env<'a>(home: &'a str, endpoint: &'a str, offline: bool) -> Vec<(&'a str, &'a str)> {
    vec![
        ("HF_HOME", home),
        ("HF_ENDPOINT", endpoint),
        ("HF_HUB_OFFLINE", if offline { "1" } else { "" }),
        ("HF_HUB_CACHE", ""),
        ("HUGGINGFACE_HUB_CACHE", ""),
        ("HF_TOKEN", ""),
        ("HUGGING_FACE_HUB_TOKEN", ""),
        ("TRANSFORMERS_OFFLINE", ""),
    ]
}

/// Every file under `dir`, relative, sorted, with its bytes.
pub fn snapshot_dir(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.unwrap();
        if e.file_type().is_file() {
            out.push((
                e.path().strip_prefix(dir).unwrap().to_owned(),
                std::fs::read(e.path()).unwrap(),
            ));
        }
    }
    out
}

/// Text of stdout and stderr, for assertion messages.
pub fn describe(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The arguments of the small experiment most tests run: `--out out`, English and Yoruba,
/// Medical only (11 test questions a language, 22 requests a model), then `extra`.
pub fn small_experiment<'a>(out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--out",
        out.to_str().expect("a UTF-8 path"),
        "--languages",
        "en,yo",
        "--domains",
        "medical",
    ];
    args.extend_from_slice(extra);
    args
}

/// The JSON file at `p`; panics naming it.
pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// How many files are under `dir`, recursively.
pub fn count_files(dir: &Path) -> usize {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count()
}

/// Asserts that a run stopped because its directory holds the results of other settings,
/// naming `change` (`seed: 1 -> 2`) and how to discard them.
pub fn assert_stopped_for_change(o: &Output, change: &str) {
    assert!(!o.status.success(), "{}", describe(o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("holds the results of a different experiment"),
        "{err}"
    );
    assert!(err.contains(change), "{err}");
    assert!(err.contains("--fresh"), "{err}");
}

/// Runs `reproduce` with `args` into `out` and kills it (SIGKILL) twice, once as soon as the
/// job ledger exists (fine-tuning) and once when `out/cache` holds `cached` files
/// (evaluation), then reruns it to the end. Panics unless at least one kill landed before
/// the run finished and the rerun succeeds. The caller compares the files with an
/// uninterrupted run's.
pub fn kill_twice_then_resume(args: &[&str], out: &Path, cached: usize) {
    use std::time::{Duration, Instant};
    let mut killed_mid_run = 0;
    for (what, ready) in [
        (
            "fine-tuning",
            Box::new(|| out.join("ledger.json").exists()) as Box<dyn Fn() -> bool>,
        ),
        (
            "evaluation",
            Box::new(|| count_files(&out.join("cache")) >= cached),
        ),
    ] {
        let mut child = spawn_example("reproduce", args, &[]);
        let start = Instant::now();
        while !ready() && start.elapsed() < Duration::from_secs(120) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let finished = child.try_wait().unwrap().is_some();
        child.kill().ok();
        child.wait().unwrap();
        if !finished && !out.join("report.md").exists() {
            killed_mid_run += 1;
        }
        eprintln!("kill during {what}: finished before the kill = {finished}");
    }
    assert!(
        killed_mid_run >= 1,
        "no kill landed before the run finished"
    );
    let o = run_example("reproduce", args);
    assert!(o.status.success(), "{}", describe(&o));
}

/// Panics unless each of `files` (relative) has the same bytes under `a` and `b`.
pub fn assert_same_files(a: &Path, b: &Path, files: &[&str]) {
    for f in files {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs after kill and resume"
        );
    }
}
