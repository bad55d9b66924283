//! The provider serves every model (a base and its `<base>+<adapter>` ids) from one worker
//! thread, and each request's answer is the one it gets alone; the fine-tuner trains every
//! job and its calibration on one thread. Their own test binary: they count the process's
//! threads by name, which another test's provider or fine-tuner would add to.

use std::sync::Arc;

use candle_core::Tensor;
use xlt_local::testing::{config, random_model, write_hf_dir};
use xlt_local::{
    LoadOptions, LocalModel, LocalProvider, LoraConfig, ModelSource, Ops, ServeOptions,
    attach_lora, lora_params, save_adapter,
};
use xlt_provider::{
    ChatMessage, ChatModel, ChatRequest, ChatResponse, FilePurpose, FineTuneSpec, FineTuner,
    Hyperparameters, JobStatus, LearningRate, Param, Role,
};

/// The threads of this process named `name` (`/proc/self/task/*/comm`).
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|t| {
            let comm = std::fs::read_to_string(t.as_ref().unwrap().path().join("comm"));
            comm.is_ok_and(|c| c.trim_end() == name)
        })
        .count()
}

fn request(model: &str, i: usize, letters: bool) -> ChatRequest {
    let mut r = ChatRequest::new(
        model,
        vec![ChatMessage::new(Role::User, "x".repeat(1 + 3 * i))],
    );
    r.letters = letters;
    r.max_tokens = Some(4);
    r.temperature = Some(0.0);
    r.top_logprobs = Some(3);
    r
}

/// What a response says: its text, its letters' log-probabilities (exact: letter requests
/// run one prompt a pass, whatever else is waiting), its top tokens and their
/// log-probabilities (a generated batch moves them in the last bits, as the products'
/// kernels change with the row count).
fn gist(r: &ChatResponse) -> (String, Vec<String>, Vec<f64>) {
    let top = r.top_logprobs.clone().unwrap_or_default();
    (
        format!("{:?} {:?}", r.text, r.letter_logprobs),
        top.iter().map(|t| t.token.clone()).collect(),
        top.iter().map(|t| t.logprob).collect(),
    )
}

/// f32 rounding over a few layers of a tiny model: log-probabilities of order 1 agree to
/// about 1e-5 between batch compositions; 1e-4 leaves a margin and still catches a request
/// answered by the wrong model (the adapters move them by tenths).
const TOL: f64 = 1e-4;

/// A random tiny model written as a Hugging Face directory `root/base`.
fn random_base_dir(root: &std::path::Path, cfg: &xlt_local::Config) -> std::path::PathBuf {
    let dir = root.join("base");
    std::fs::create_dir_all(&dir).unwrap();
    let (varmap, _) = random_model(cfg, Ops::Fused);
    write_hf_dir(&dir, cfg, &varmap, false);
    dir
}

/// Requests to a base and two adapters, all at once, each answered as it is alone; the
/// adapters answer differently from the base (each request reaches its own model); and the
/// three models are served by one worker thread (one per model held each one's peak working
/// set at once, issue #26).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_thread_serves_a_base_and_its_adapters() {
    // The product kernels' thread pool is started here, not by the worker: a thread started
    // by another takes its name on Linux, and the pool's would be counted as workers.
    rayon::broadcast(|_| ());
    let cfg = config("llama");
    let tmp = tempfile::tempdir().unwrap();
    let base_dir = random_base_dir(tmp.path(), &cfg);
    let base = base_dir.to_str().unwrap().to_owned();
    let lora = LoraConfig {
        lora_dropout: 0.0,
        ..LoraConfig::default()
    };
    let mut ids = vec![base.clone()];
    for k in 0..2 {
        let mut model =
            LocalModel::load(&ModelSource::Dir(base_dir.clone()), &LoadOptions::default()).unwrap();
        attach_lora(model.model_mut(), &lora, k).unwrap();
        for p in lora_params(model.model()) {
            let b = p.b.as_tensor();
            p.b.set(&Tensor::randn(0f32, 0.5, b.shape(), b.device()).unwrap())
                .unwrap();
        }
        let dir = tmp.path().join(format!("adapter{k}"));
        save_adapter(model.model(), &lora, &base, &dir).unwrap();
        ids.push(format!("{base}+{}", dir.display()));
    }
    let provider = Arc::new(LocalProvider::new(
        LoadOptions::default(),
        ServeOptions {
            max_batch: 4,
            max_concurrent: 16,
        },
    ));
    let cases: Vec<(usize, usize, bool)> = (0..ids.len())
        .flat_map(|m| (0..4).flat_map(move |i| [(m, i, true), (m, i, false)]))
        .collect();
    let mut alone = Vec::new();
    for &(m, i, letters) in &cases {
        alone.push(gist(
            &provider.chat(&request(&ids[m], i, letters)).await.unwrap(),
        ));
    }
    let handles: Vec<_> = cases
        .iter()
        .map(|&(m, i, letters)| {
            let (p, r) = (provider.clone(), request(&ids[m], i, letters));
            tokio::spawn(async move { p.chat(&r).await.unwrap() })
        })
        .collect();
    for (h, (case, alone)) in handles.into_iter().zip(cases.iter().zip(&alone)) {
        let together = gist(&h.await.unwrap());
        assert_eq!(
            (&together.0, &together.1),
            (&alone.0, &alone.1),
            "{case:?} together and alone"
        );
        for (t, a) in together.2.iter().zip(&alone.2) {
            assert!(
                (t - a).abs() < TOL,
                "{case:?}: log-probability {t} together, {a} alone"
            );
        }
    }
    // Request i of each model: the adapters change the answers.
    let per_model = cases.len() / ids.len();
    for m in 1..ids.len() {
        assert_ne!(
            alone[m * per_model],
            alone[0],
            "adapter {m} and base, letters"
        );
        assert_ne!(
            alone[m * per_model + 1],
            alone[1],
            "adapter {m} and base, generated"
        );
    }
    let workers = threads_named("xlt-local-serve");
    assert_eq!(workers, 1, "worker threads serving {} models", ids.len());
    drop(provider);
}

/// Two jobs and a calibration of one fine-tuner run on one training thread, one after
/// another (a thread per job held each job's peak working set at once, issue #26), and
/// both jobs succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_thread_trains_every_job_and_the_calibration() {
    rayon::broadcast(|_| ());
    let cfg = config("llama");
    let tmp = tempfile::tempdir().unwrap();
    let base_dir = random_base_dir(tmp.path(), &cfg);
    let dir = base_dir.clone();
    let loader: xlt_local::ModelLoader = Arc::new(move |_: &str| {
        LocalModel::load(
            &ModelSource::Dir(dir.clone()),
            &LoadOptions {
                ops: Ops::Differentiable,
                ..LoadOptions::default()
            },
        )
    });
    let tuner =
        xlt_local::LocalFineTuner::new(tmp.path().join("tuning"), loader, LoraConfig::default());
    let lines: String = (0..4)
        .map(|i| {
            serde_json::json!({"messages": [
                {"role": "user", "content": format!("question {i}")},
                {"role": "assistant", "content": "B"}
            ]})
            .to_string()
                + "\n"
        })
        .collect();
    let file = tuner
        .upload("train.jsonl", lines.into_bytes(), FilePurpose::FineTune)
        .await
        .unwrap();
    let spec = FineTuneSpec {
        base_model: "tiny".into(),
        training_file: file.id.clone(),
        validation_file: None,
        hyperparameters: Hyperparameters {
            epochs: Param::Value(1),
            batch_size: Param::Value(2),
            learning_rate: LearningRate::Absolute(1e-3),
            ..Hyperparameters::default()
        },
        suffix: None,
        seed: Some(1),
        lora: None,
    };
    let jobs = [
        tuner.create_job(&spec, "a").await.unwrap().id,
        tuner.create_job(&spec, "b").await.unwrap().id,
    ];
    let files = [tuner
        .root()
        .join("files")
        .join(format!("{}.jsonl", file.id))];
    let estimate = tuner.estimate_training(&spec, &files, 1).unwrap();
    assert!(
        estimate.calibration_tokens > 0,
        "calibrated on {} tokens",
        estimate.calibration_tokens
    );
    for id in &jobs {
        let mut status = JobStatus::Queued;
        for _ in 0..1200 {
            status = tuner.get_job(id).await.unwrap().status;
            if status.is_terminal() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(status, JobStatus::Succeeded, "job {id}");
    }
    let trainers = threads_named("xlt-local-train");
    assert_eq!(
        trainers, 1,
        "training threads after two jobs and a calibration"
    );
}
