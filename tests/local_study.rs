//! `reproduce --provider local` end to end on a tiny random-weight model
//! (`xlt_local::testing`): prepare, plan (training time and adapter disk measured here),
//! LoRA fine-tuning of every slice, evaluation of the base and every adapter, analysis; a
//! rerun that trains and asks nothing again; and a run killed (SIGKILL) during training
//! that resumes from its checkpoint and ends on the adapters of an uninterrupted run.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// Writes the tiny Llama-family model (2 layers, hidden size 32, byte-level tokenizer,
/// SmolLM2's chat template) as a Hugging Face directory under `dir`.
fn tiny_model(dir: &Path) -> PathBuf {
    let model = dir.join("tiny-llama");
    std::fs::create_dir_all(&model).unwrap();
    let cfg = xlt_local::testing::config("llama");
    let (varmap, _) = xlt_local::testing::random_model(&cfg, xlt_local::Ops::Fused);
    xlt_local::testing::write_hf_dir(&model, &cfg, &varmap, false);
    model
}

/// Twelve medical questions, in English and Yoruba, from the shipped fixtures (the shortest,
/// so that the byte-level tiny model trains quickly), as JSON Lines under `dir/data`.
fn tiny_data(dir: &Path) -> PathBuf {
    use xlt::data::{Domain, Language};
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let lite = xlt::fixtures_dir().join("global-mmlu/lite");
    let load = |lang: Language| {
        xlt::data::load_file(&lite.join(format!("{}.test.csv", lang.code())), Some(lang))
            .unwrap()
            .into_iter()
            .filter(|q| q.domain == Domain::Medical)
            .collect::<Vec<_>>()
    };
    let (en, yo) = (load(Language::English), load(Language::Yoruba));
    let mut ids: Vec<(usize, &str)> = en
        .iter()
        .filter(|q| yo.iter().any(|y| y.sample_id == q.sample_id))
        .map(|q| {
            (
                q.question.len() + q.options.iter().map(String::len).sum::<usize>(),
                q.sample_id.as_str(),
            )
        })
        .collect();
    ids.sort();
    ids.truncate(12);
    for (lang, questions) in [("en", &en), ("yo", &yo)] {
        let mut text = String::new();
        for q in questions
            .iter()
            .filter(|q| ids.iter().any(|(_, id)| *id == q.sample_id))
        {
            let line = serde_json::json!({
                "sample_id": q.sample_id, "subject": q.subject, "subject_category": "Medical",
                "question": q.question, "option_a": q.options[0], "option_b": q.options[1],
                "option_c": q.options[2], "option_d": q.options[3],
                "answer": q.answer.to_string(),
            });
            text += &format!("{line}\n");
        }
        std::fs::write(data.join(format!("{lang}.test.jsonl")), text).unwrap();
    }
    data
}

/// The test sets' sizes of `out`, by slice.
fn eval_lines(out: &Path) -> usize {
    ["en-medical", "yo-medical"]
        .iter()
        .map(|s| {
            std::fs::read_to_string(out.join(format!("eval/{s}.jsonl")))
                .unwrap()
                .lines()
                .count()
        })
        .sum()
}

/// The study's arguments: two languages, one domain, regex grading, short answers, and a
/// small batch so that each job takes several optimizer steps.
fn args<'a>(out: &'a str, model: &'a str, data: &'a str) -> Vec<&'a str> {
    vec![
        "--data",
        data,
        "--out",
        out,
        "--provider",
        "local",
        "--base-model",
        model,
        "--languages",
        "en,yo",
        "--domains",
        "medical",
        // Letters (the local default): a resumed study's letter log-probabilities must
        // equal an uninterrupted one's to the last bit.
        "--scoring",
        "letters",
        "--grader",
        "regex",
        "--max-tokens",
        "2",
        "--batch-size",
        "2",
        "--lora-rank",
        "4",
        "--lora-targets",
        "q_proj,v_proj,down_proj",
    ]
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// A safetensors file's JSON header and its data bytes.
fn safetensors(path: &Path) -> (serde_json::Value, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

/// Every job directory under `<out>/local/jobs`, sorted.
/// Waits (up to 120 s) until a job of the study in `out` has written a checkpoint; false
/// when the run ended or the time ran out first.
fn wait_for_a_checkpoint(child: &mut std::process::Child, out: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let found = job_dirs(out)
            .iter()
            .any(|d| d.join("checkpoint/trainer_state.json").exists());
        if found || Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            return found;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn job_dirs(out: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(out.join("local/jobs"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// Each slice's adapter weights, by slice (the job's `suffix`).
fn adapters(out: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = job_dirs(out)
        .iter()
        .map(|d| {
            let job = read_json(&d.join("job.json"));
            (
                job["spec"]["suffix"].as_str().unwrap().to_owned(),
                std::fs::read(d.join("adapter/adapter_model.safetensors")).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn local_study_fine_tunes_evaluates_and_analyzes_then_a_rerun_asks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let data = tiny_data(dir.path());
    let d = data.to_str().unwrap();
    let out = dir.path().join("study");
    let (o, m) = (out.to_str().unwrap(), model.to_str().unwrap());
    let run = run_example("reproduce", &args(o, m, d));
    assert!(run.status.success(), "{}", describe(&run));
    let stderr = String::from_utf8_lossy(&run.stderr);
    // The plan: training time measured on this machine, and the adapters' disk.
    assert!(stderr.contains("training time:"), "{stderr}");
    assert!(stderr.contains("on cpu"), "{stderr}");
    assert!(stderr.contains("adapter disk:"), "{stderr}");
    assert!(
        !stderr.contains("evaluates the base model only"),
        "{stderr}"
    );
    let plan = read_json(&out.join("plan.json"));
    let machine = &plan["machine_training"];
    assert!(machine["tokens_per_second"].as_f64().unwrap() > 0.0);
    // Rank 4 on q (32x32), v (16x32) and down (32x48) of 2 layers, f32: 4 * (32+32 + 32+16
    // + 48+32) * 2 layers * 4 bytes, plus safetensors' header.
    let weights = 4 * (64 + 48 + 80) * 2 * 4;
    let bytes = machine["adapter_bytes"].as_u64().unwrap();
    assert!(bytes >= weights && bytes < weights + 4096, "{bytes}");

    // One adapter per slice, in PEFT format, named by the model ids of models.json.
    let models = read_json(&out.join("models.json"));
    assert_eq!(models["provider"], "local");
    let tuned = models["fine_tuned"].as_object().unwrap();
    assert_eq!(tuned.len(), 2);
    for (slice, entry) in tuned {
        let id = entry["model"].as_str().unwrap();
        let (base, adapter) = id.split_once('+').unwrap();
        assert_eq!(base, m, "{slice}");
        let adapter = Path::new(adapter);
        assert!(adapter.is_absolute(), "{id}");
        let config = read_json(&adapter.join("adapter_config.json"));
        assert_eq!(config["peft_type"], "LORA");
        assert_eq!(config["r"], 4);
        assert_eq!(config["lora_alpha"], 32.0);
        assert_eq!(config["lora_dropout"], 0.05);
        let (header, data) = safetensors(&adapter.join("adapter_model.safetensors"));
        let tensors = header.as_object().unwrap();
        let keys = tensors.keys().filter(|k| *k != "__metadata__").count();
        assert_eq!(keys, 2 * 3 * 2, "{slice}: A and B of 3 modules x 2 layers");
        let b = &header["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"];
        assert_eq!(b["shape"], serde_json::json!([32, 4]));
        assert_eq!(b["dtype"], "F32");
        // Trained: lora_B starts at zero.
        let (start, end) = (
            b["data_offsets"][0].as_u64().unwrap() as usize,
            b["data_offsets"][1].as_u64().unwrap() as usize,
        );
        assert!(
            data[start..end].iter().any(|&x| x != 0),
            "{slice}: lora_B is still zero"
        );
    }
    for job in job_dirs(&out) {
        let j = read_json(&job.join("job.json"));
        assert_eq!(j["job"]["status"], "succeeded");
        let events = std::fs::read_to_string(job.join("events.jsonl")).unwrap();
        assert!(events.contains("tokens/s"), "{events}");
    }
    // Every model evaluated on every test set, and analysed.
    let tests = eval_lines(&out);
    assert!(tests >= 4, "{tests} test questions");
    for label in ["base", "en-medical", "yo-medical"] {
        let text = std::fs::read_to_string(out.join(format!("outcomes/{label}.jsonl"))).unwrap();
        assert_eq!(text.lines().count(), tests, "{label}");
    }
    for f in ["report.md", "summary.json", "run.json", "fingerprint.json"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let fp = read_json(&out.join("fingerprint.json"));
    assert_eq!(fp["settings"]["lora_rank"], "4");
    assert_eq!(fp["settings"]["lora_targets"], "q_proj,v_proj,down_proj");

    // A rerun into the same directory trains nothing and asks nothing again.
    let before = (
        job_dirs(&out),
        snapshot_dir(&out.join("local/jobs")),
        snapshot_dir(&out.join("outcomes")),
        snapshot_dir(&out.join("cache")),
    );
    let again = run_example("reproduce", &args(o, m, d));
    assert!(again.status.success(), "{}", describe(&again));
    let after = (
        job_dirs(&out),
        snapshot_dir(&out.join("local/jobs")),
        snapshot_dir(&out.join("outcomes")),
        snapshot_dir(&out.join("cache")),
    );
    assert!(
        before == after,
        "the rerun changed jobs, outcomes or the cache"
    );
    // ... times no training steps again, and says in one line that nothing was left to do
    // instead of showing the plan again (#26).
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("nothing left to do")
            && !stderr.contains("measuring local training speed")
            && !stderr.contains("fine-tuning jobs"),
        "{stderr}"
    );

    // Outcomes evaluated again from the response cache are the same bytes: every number read
    // back is the one written (serde_json's `float_roundtrip`; without it, a trial found
    // letter log-probabilities one ulp off after a study was killed during evaluation).
    let outcomes = snapshot_dir(&out.join("outcomes"));
    std::fs::remove_dir_all(out.join("outcomes")).unwrap();
    for f in ["summary.json", "report.md"] {
        std::fs::remove_file(out.join(f)).unwrap();
    }
    let from_cache = run_example("reproduce", &args(o, m, d));
    assert!(from_cache.status.success(), "{}", describe(&from_cache));
    assert!(
        snapshot_dir(&out.join("outcomes")) == outcomes,
        "outcomes read back from the cache differ from the first run's"
    );
    assert!(
        snapshot_dir(&out.join("cache")) == after.3,
        "evaluating from the cache asked the model again"
    );

    // Another rank into the same directory stops before anything, naming it.
    let mut other = args(o, m, d);
    let rank = other.iter().position(|a| *a == "--lora-rank").unwrap();
    other[rank + 1] = "8";
    let stopped = run_example("reproduce", &other);
    assert!(!stopped.status.success());
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert!(stderr.contains("lora_rank: 4 -> 8"), "{stderr}");
}

#[test]
fn local_options_are_checked_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let data = tiny_data(dir.path());
    let d = data.to_str().unwrap();
    let out = dir.path().join("study");
    let (o, m) = (out.to_str().unwrap(), model.to_str().unwrap());
    let check = |extra: &[&str], expected: &str| {
        let mut a = args(o, m, d);
        for pair in extra.chunks(2) {
            match a.iter().position(|x| *x == pair[0]) {
                Some(i) => a[i + 1] = pair[1],
                None => a.extend_from_slice(pair),
            }
        }
        let r = run_example("reproduce", &a);
        assert!(!r.status.success(), "{extra:?} was accepted");
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
        assert!(!out.exists(), "{extra:?} left {}", out.display());
    };
    check(
        &["--lora-targets", "q_proj,qkv"],
        "unknown LoRA target module \"qkv\"",
    );
    check(&["--lora-dropout", "1.5"], "LoRA dropout must be in [0, 1)");
    check(
        &["--learning-rate-multiplier", "0.4"],
        "takes an absolute learning rate",
    );
    let r = run_example(
        "reproduce",
        &[
            "--data",
            d,
            "--out",
            o,
            "--lora-rank",
            "8",
            "--languages",
            "en",
            "--domains",
            "medical",
        ],
    );
    assert!(!r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stderr)
            .contains("the embedded provider trains no LoRA adapters"),
        "{}",
        describe(&r)
    );
}

#[test]
fn a_study_killed_during_training_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let data = tiny_data(dir.path());
    let d = data.to_str().unwrap();
    let m = model.to_str().unwrap();
    // Checkpoint after every optimizer step, so that the kill lands after one.
    let env = [("XLT_CHECKPOINT_STEPS", "1")];
    let killed = dir.path().join("killed");
    let k = killed.to_str().unwrap();
    let mut child = spawn_example("reproduce", &args(k, m, d), &env);
    let checkpointed = wait_for_a_checkpoint(&mut child, &killed);
    child.kill().unwrap_or(()); // SIGKILL
    let _ = child.wait();
    assert!(checkpointed, "no checkpoint before the run ended");
    let unfinished = job_dirs(&killed)
        .iter()
        .filter(|d| read_json(&d.join("job.json"))["job"]["status"] != "succeeded")
        .count();
    assert!(unfinished > 0, "the kill came after training");

    let resumed = run_example_with_env("reproduce", &args(k, m, d), &env, None);
    assert!(resumed.status.success(), "{}", describe(&resumed));
    let events: String = job_dirs(&killed)
        .iter()
        .map(|d| std::fs::read_to_string(d.join("events.jsonl")).unwrap())
        .collect();
    assert!(events.contains("resumed at step "), "{events}");
    assert_eq!(job_dirs(&killed).len(), 2, "a job was created twice");

    // The same adapters as a run that never stopped.
    let clean = dir.path().join("clean");
    let c = clean.to_str().unwrap();
    let run = run_example("reproduce", &args(c, m, d));
    assert!(run.status.success(), "{}", describe(&run));
    assert!(
        adapters(&killed) == adapters(&clean),
        "the resumed adapters differ from an uninterrupted run's"
    );
    // The same outcomes, byte for byte: letter log-probabilities do not depend on which
    // requests happened to share a batch, nor on what the process did before.
    for label in ["base", "en-medical", "yo-medical"] {
        let file = format!("outcomes/{label}.jsonl");
        let (k, c) = (
            std::fs::read_to_string(killed.join(&file)).unwrap(),
            std::fs::read_to_string(clean.join(&file)).unwrap(),
        );
        assert!(k.contains("\"method\":\"letters\""), "{file}: {k}");
        if let Some((a, b)) = k.lines().zip(c.lines()).find(|(a, b)| a != b) {
            panic!("{file} differs:\n resumed: {a}\n   clean: {b}");
        }
        assert_eq!(k.lines().count(), c.lines().count(), "{file}");
    }
    assert_eq!(
        read_json(&killed.join("summary.json")),
        read_json(&clean.join("summary.json"))
    );
}

/// Ctrl-C (SIGINT) during training says what it interrupted and leaves no job marked
/// running: the job is `interrupted` in its `job.json`, and a rerun says where it resumed
/// and finishes. The progress (stderr is a pipe, not a terminal) is plain lines with the
/// steps and no escape codes.
#[cfg(unix)]
#[test]
fn ctrl_c_during_training_marks_the_job_interrupted_and_a_rerun_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let data = tiny_data(dir.path());
    let d = data.to_str().unwrap();
    let m = model.to_str().unwrap();
    let env = [("XLT_CHECKPOINT_STEPS", "1")];
    let out = dir.path().join("study");
    let o = out.to_str().unwrap();
    let mut child = spawn_example("reproduce", &args(o, m, d), &env);
    let checkpointed = wait_for_a_checkpoint(&mut child, &out);
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -INT failed");
    let interrupted = child.wait_with_output().unwrap();
    assert!(checkpointed, "no checkpoint before the run ended");
    let err = String::from_utf8_lossy(&interrupted.stderr);
    assert!(!interrupted.status.success(), "{}", describe(&interrupted));
    // 128 + SIGINT, as a shell reports a process Ctrl-C ended.
    assert_eq!(
        interrupted.status.code(),
        Some(130),
        "{}",
        describe(&interrupted)
    );
    assert!(
        err.contains("interrupted (Ctrl-C) while fine-tuning")
            && err.contains("run the same command again to resume"),
        "{err}"
    );
    let statuses: Vec<(String, String)> = job_dirs(&out)
        .iter()
        .map(|d| {
            let job = read_json(&d.join("job.json"))["job"].clone();
            (
                job["status"].as_str().unwrap().to_owned(),
                job["provider_status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        statuses.iter().all(|(s, _)| s != "running"),
        "a job left running: {statuses:?}"
    );
    assert!(
        statuses.iter().any(|(_, p)| p == "interrupted"),
        "no job marked interrupted: {statuses:?}\n{err}"
    );

    let resumed = run_example_with_env("reproduce", &args(o, m, d), &env, None);
    assert!(resumed.status.success(), "{}", describe(&resumed));
    let err = String::from_utf8_lossy(&resumed.stderr);
    assert!(err.contains(": resumed at step "), "{err}");
    assert!(err.contains(": step "), "no step line: {err}");
    // Where it resumed, then only new steps: the killed run's steps are not replayed.
    let resumed_at = err.find(": resumed at step ").unwrap();
    assert!(
        !err[..resumed_at].contains(": step "),
        "steps replayed before the resume: {err}"
    );
    assert!(!resumed.stderr.contains(&0x1b), "escape codes: {err}");
    assert_eq!(job_dirs(&out).len(), 2, "a job was created twice");
}
