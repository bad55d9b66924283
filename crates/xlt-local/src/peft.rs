//! Adapters in PEFT's on-disk format, so that adapters trained here load in PEFT, vLLM
//! and `transformers`, and adapters trained there load here: a directory with
//! `adapter_config.json` (PEFT's `LoraConfig`, `peft_type: "LORA"`) and
//! `adapter_model.safetensors` whose keys are PEFT's
//! (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`, `(r, in)`, and
//! `...lora_B.weight`, `(out, r)`). See PEFT's `save_pretrained` and
//! `get_peft_model_state_dict`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::LocalError;
use crate::llama::Model;
use crate::lora::{LoraConfig, LoraParam, attach_weights, lora_params};

/// The adapter's configuration file.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The adapter's weights file.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// PEFT's prefix on every key of a causal language model's adapter.
const PREFIX: &str = "base_model.model.";

/// `adapter_config.json`, the fields this crate reads or writes; PEFT writes more, which
/// are ignored on reading.
#[derive(Debug, Serialize, Deserialize)]
struct AdapterConfig {
    peft_type: String,
    #[serde(default)]
    task_type: Option<String>,
    #[serde(default)]
    base_model_name_or_path: Option<String>,
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    lora_dropout: f64,
    target_modules: TargetModules,
    #[serde(default = "none")]
    bias: String,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    inference_mode: bool,
    #[serde(default)]
    modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    rank_pattern: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    alpha_pattern: BTreeMap<String, serde_json::Value>,
}

fn none() -> String {
    "none".into()
}

/// PEFT writes `target_modules` as a list (or, from a set, a list in any order) or as a
/// string (a regular expression, or `all-linear`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum TargetModules {
    List(Vec<String>),
    One(String),
}

/// Writes the adapters attached to `model` to the directory `dir` in PEFT's format,
/// atomically: both files are written into a temporary directory beside `dir`, which then
/// replaces `dir` (an existing adapter there is replaced whole, never half-written).
/// `base_model` goes into `base_model_name_or_path`.
///
/// # Errors
/// [`LocalError::Invalid`] when the model has no adapter; [`LocalError::Io`] naming the
/// path that could not be written.
pub fn save_adapter(
    model: &Model,
    config: &LoraConfig,
    base_model: &str,
    dir: &Path,
) -> Result<(), LocalError> {
    save_params(&lora_params(model), config, base_model, dir)
}

/// [`save_adapter`] of the given adapter tensors (shared with a model being trained).
pub(crate) fn save_params(
    params: &[LoraParam],
    config: &LoraConfig,
    base_model: &str,
    dir: &Path,
) -> Result<(), LocalError> {
    if params.is_empty() {
        return Err(LocalError::Invalid(
            "the model has no LoRA adapter to save".into(),
        ));
    }
    let mut tensors = std::collections::HashMap::new();
    for p in params {
        tensors.insert(
            format!("{PREFIX}{}.lora_A.weight", p.module),
            p.a.as_detached_tensor().contiguous()?,
        );
        tensors.insert(
            format!("{PREFIX}{}.lora_B.weight", p.module),
            p.b.as_detached_tensor().contiguous()?,
        );
    }
    let file = AdapterConfig {
        peft_type: "LORA".into(),
        task_type: Some("CAUSAL_LM".into()),
        base_model_name_or_path: Some(base_model.into()),
        r: config.r,
        lora_alpha: config.lora_alpha,
        lora_dropout: config.lora_dropout,
        target_modules: TargetModules::List(config.target_modules.clone()),
        bias: none(),
        fan_in_fan_out: false,
        use_rslora: config.use_rslora,
        use_dora: false,
        inference_mode: true,
        modules_to_save: None,
        rank_pattern: BTreeMap::new(),
        alpha_pattern: BTreeMap::new(),
    };
    let json = serde_json::to_string_pretty(&file)
        .map_err(|e| LocalError::Invalid(format!("adapter config: {e}")))?;

    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dir
        .file_name()
        .ok_or_else(|| LocalError::Invalid(format!("{}: not a directory name", dir.display())))?
        .to_string_lossy()
        .into_owned();
    std::fs::create_dir_all(&parent).map_err(|e| LocalError::io(&parent, e))?;
    let pid = std::process::id();
    let tmp = parent.join(format!(".{name}.tmp-{pid}"));
    let old = parent.join(format!(".{name}.old-{pid}"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| LocalError::io(&tmp, e))?;
    let written = (|| {
        let cfg_path = tmp.join(ADAPTER_CONFIG);
        std::fs::write(&cfg_path, json + "\n").map_err(|e| LocalError::io(&cfg_path, e))?;
        let st_path = tmp.join(ADAPTER_WEIGHTS);
        candle_core::safetensors::save(&tensors, &st_path)
            .map_err(|e| LocalError::io(&st_path, e))?;
        replace_dir(&tmp, dir, &old)
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        if old.exists() && !dir.exists() {
            let _ = std::fs::rename(&old, dir);
        }
    }
    written
}

/// Reads a PEFT LoRA adapter from the directory `dir` (written by [`save_adapter`] or by
/// PEFT's `save_pretrained`), attaches it to `model` and returns its configuration.
/// Dropout stays off (evaluation).
///
/// # Errors
/// [`LocalError::Io`] or [`LocalError::Json`] naming the file; [`LocalError::Unsupported`]
/// for another `peft_type`, DoRA, trained biases, `fan_in_fan_out`, per-layer rank or alpha
/// patterns, `modules_to_save`; [`LocalError::Tensor`] naming the file and key for a key
/// that is not a LoRA weight of a projection the model has, a module with `lora_A` but no
/// `lora_B` (or the reverse), or a shape that does not fit.
pub fn load_adapter(model: &mut Model, dir: &Path) -> Result<LoraConfig, LocalError> {
    let cfg_path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| LocalError::io(&cfg_path, e))?;
    let file: AdapterConfig = serde_json::from_str(&text).map_err(|e| LocalError::Json {
        path: cfg_path.clone(),
        what: "adapter_config.json",
        message: e.to_string(),
    })?;
    let unsupported = |message: String| LocalError::Unsupported {
        path: cfg_path.clone(),
        message,
    };
    if file.peft_type != "LORA" {
        return Err(unsupported(format!(
            "peft_type {:?} (only LORA)",
            file.peft_type
        )));
    }
    if file.use_dora {
        return Err(unsupported("use_dora (DoRA adapters)".into()));
    }
    if file.bias != "none" {
        return Err(unsupported(format!("bias {:?} (only \"none\")", file.bias)));
    }
    if file.fan_in_fan_out {
        return Err(unsupported("fan_in_fan_out (Conv1D layers)".into()));
    }
    if !file.rank_pattern.is_empty() || !file.alpha_pattern.is_empty() {
        return Err(unsupported("rank_pattern or alpha_pattern".into()));
    }
    if file.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(unsupported(
            "modules_to_save (fully trained modules)".into(),
        ));
    }
    let st_path = dir.join(ADAPTER_WEIGHTS);
    let tensors = candle_core::safetensors::load(&st_path, model.device())
        .map_err(|e| LocalError::io(&st_path, e))?;
    let mut modules: BTreeMap<String, (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
    for (key, t) in tensors {
        let bad = |message: &str| LocalError::Tensor {
            path: st_path.clone(),
            tensor: key.clone(),
            message: message.into(),
        };
        let rest = key
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("not a key of PEFT's (base_model.model.*)"))?;
        let (module, which) = if let Some(m) = rest.strip_suffix(".lora_A.weight") {
            (m, 0)
        } else if let Some(m) = rest.strip_suffix(".lora_B.weight") {
            (m, 1)
        } else {
            return Err(bad("not a lora_A or lora_B weight"));
        };
        let entry = modules.entry(module.to_owned()).or_default();
        if which == 0 {
            entry.0 = Some(t);
        } else {
            entry.1 = Some(t);
        }
    }
    let mut pairs = Vec::new();
    for (module, (a, b)) in modules {
        match (a, b) {
            (Some(a), Some(b)) => pairs.push((module, a, b)),
            (a, _) => {
                let missing = if a.is_none() { "lora_A" } else { "lora_B" };
                return Err(LocalError::Tensor {
                    path: st_path.clone(),
                    tensor: format!("{PREFIX}{module}.{missing}.weight"),
                    message: "missing".into(),
                });
            }
        }
    }
    if pairs.is_empty() {
        return Err(LocalError::Tensor {
            path: st_path,
            tensor: "*".into(),
            message: "the adapter has no LoRA weights".into(),
        });
    }
    let target_modules = match file.target_modules {
        TargetModules::List(l) => l,
        // A regular expression or `all-linear`: the weights file says which modules.
        TargetModules::One(_) => pairs
            .iter()
            .filter_map(|(m, _, _)| m.rsplit('.').next().map(String::from))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    let config = LoraConfig {
        r: file.r,
        lora_alpha: file.lora_alpha,
        lora_dropout: file.lora_dropout,
        target_modules,
        use_rslora: file.use_rslora,
    };
    attach_weights(model, pairs, &config, &st_path)?;
    Ok(config)
}

/// Moves the finished directory `tmp` to `dir`, replacing what is there (moved aside to
/// `old` first and removed after).
pub(crate) fn replace_dir(tmp: &Path, dir: &Path, old: &Path) -> Result<(), LocalError> {
    if dir.exists() {
        std::fs::rename(dir, old).map_err(|e| LocalError::io(dir, e))?;
    }
    std::fs::rename(tmp, dir).map_err(|e| LocalError::io(dir, e))?;
    if old.exists() {
        std::fs::remove_dir_all(old).map_err(|e| LocalError::io(old, e))?;
    }
    Ok(())
}
