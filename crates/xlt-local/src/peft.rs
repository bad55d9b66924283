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
use crate::lora::{LoraConfig, LoraParam, ModuleWeights, attach_weights, lora_params};

/// The adapter's configuration file.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The adapter's weights file.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// PEFT's prefix on every key of a causal language model's adapter.
const PREFIX: &str = "base_model.model.";

/// `adapter_config.json`, the fields this crate reads or writes; PEFT writes more, which
/// are ignored on reading unless they change what the adapter computes (then they are
/// refused, see [`load_adapter`]).
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
    #[serde(default)]
    target_modules: Option<TargetModules>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exclude_modules: Option<TargetModules>,
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
    rank_pattern: Option<Patterns>,
    #[serde(default)]
    alpha_pattern: Option<Patterns>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layers_to_transform: Option<LayerIndexes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layers_pattern: Option<TargetModules>,
    // Read only to be refused when set.
    #[serde(default, skip_serializing)]
    lora_bias: bool,
    #[serde(default, skip_serializing)]
    use_qalora: bool,
    #[serde(default, skip_serializing)]
    init_lora_weights: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    layer_replication: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    target_parameters: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    trainable_token_indices: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    alora_invocation_tokens: Option<serde_json::Value>,
}

fn none() -> String {
    "none".into()
}

/// PEFT writes `target_modules` as a list (or, from a set, a list in any order) or as a
/// string (a regular expression, or `all-linear`); `exclude_modules` and `layers_pattern`
/// likewise.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum TargetModules {
    List(Vec<String>),
    One(String),
}

/// `layers_to_transform`: one layer index or a list.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum LayerIndexes {
    One(usize),
    List(Vec<usize>),
}

/// `rank_pattern` or `alpha_pattern`: `{pattern: value}` in the file's order, which matters
/// (PEFT's `get_pattern_key` takes the first pattern that matches).
#[derive(Debug, Default)]
struct Patterns(Vec<(String, f64)>);

impl Serialize for Patterns {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Patterns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Patterns;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of module patterns and numbers")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Patterns, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, f64>()? {
                    out.push((k, v));
                }
                Ok(Patterns(out))
            }
        }
        d.deserialize_map(Visitor)
    }
}

impl Patterns {
    /// The value of the first pattern that matches the end of `module` at a name boundary,
    /// as PEFT's `get_pattern_key` (`re.match(rf"(.*\.)?({key})$", module)`).
    fn lookup(
        &self,
        module: &str,
        cfg_path: &Path,
        field: &str,
    ) -> Result<Option<f64>, LocalError> {
        for (pattern, value) in &self.0 {
            let re = regex::Regex::new(&format!("^(?:.*\\.)?(?:{pattern})$")).map_err(|e| {
                LocalError::Unsupported {
                    path: cfg_path.to_path_buf(),
                    message: format!("{field}: pattern {pattern:?} is not a regular expression this reader understands: {e}"),
                }
            })?;
            if re.is_match(module) {
                return Ok(Some(*value));
            }
        }
        Ok(None)
    }
}

/// Which modules an adapter's `target_modules` (or `exclude_modules`) selects, with PEFT's
/// rules (`check_target_module_exists`): a list entry matches the full name or its end
/// after a dot; a string is a regular expression matched against the whole name; the
/// string `all-linear` selects every linear layer but the output projection.
enum Selector {
    List(Vec<String>),
    Regex(regex::Regex),
    AllLinear,
}

impl Selector {
    fn new(
        t: &TargetModules,
        cfg_path: &Path,
        field: &str,
        all_linear: bool,
    ) -> Result<Self, LocalError> {
        Ok(match t {
            TargetModules::List(l) => Selector::List(l.clone()),
            TargetModules::One(s) if all_linear && s.eq_ignore_ascii_case("all-linear") => {
                Selector::AllLinear
            }
            TargetModules::One(s) => Selector::Regex(
                regex::Regex::new(&format!("^(?:{s})$")).map_err(|e| LocalError::Unsupported {
                    path: cfg_path.to_path_buf(),
                    message: format!(
                        "{field}: {s:?} is not a regular expression this reader understands: {e}"
                    ),
                })?,
            ),
        })
    }

    fn selects(&self, module: &str) -> bool {
        match self {
            Selector::List(l) => l
                .iter()
                .any(|t| module == t || module.ends_with(&format!(".{t}"))),
            Selector::Regex(re) => re.is_match(module),
            Selector::AllLinear => true,
        }
    }
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
        target_modules: Some(TargetModules::List(config.target_modules.clone())),
        exclude_modules: None,
        bias: none(),
        fan_in_fan_out: false,
        use_rslora: config.use_rslora,
        use_dora: false,
        inference_mode: true,
        modules_to_save: None,
        rank_pattern: Some(Patterns::default()),
        alpha_pattern: Some(Patterns::default()),
        layers_to_transform: None,
        layers_pattern: None,
        lora_bias: false,
        use_qalora: false,
        init_lora_weights: None,
        layer_replication: None,
        target_parameters: None,
        trainable_token_indices: None,
        alora_invocation_tokens: None,
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
        save_safetensors(&tensors, &st_path)?;
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
/// What is read as PEFT reads it: `target_modules` as a list, a regular expression or
/// `all-linear`, with `exclude_modules`, `layers_to_transform` and `layers_pattern`;
/// `use_rslora` (scale `lora_alpha / sqrt(r)`); `rank_pattern` and `alpha_pattern` (a rank
/// or alpha per module, the first matching pattern wins); weight keys with or without
/// the adapter name (`...q_proj.lora_A.weight`, `...q_proj.lora_A.default.weight`), in any
/// float dtype (converted to the model's); `fan_in_fan_out` is ignored with a warning, as
/// PEFT ignores it on `nn.Linear` layers. The returned config has the adapter's default `r`
/// and `lora_alpha`; per-module ranks and scales from the patterns are applied to the
/// model. A base model of another architecture or size is found by the shapes; the
/// adapter's `base_model_name_or_path` is not compared, since one model goes by a path, an
/// id or a GGUF file.
///
/// # Errors
/// [`LocalError::Io`] or [`LocalError::Json`] naming the file; [`LocalError::Unsupported`]
/// naming `adapter_config.json` and the key for what would compute something else here:
/// another `peft_type`, `use_dora`, `bias` other than `none`, `lora_bias`, `use_qalora`,
/// `modules_to_save`, `layer_replication`, `target_parameters`, `trainable_token_indices`,
/// `alora_invocation_tokens`, an `init_lora_weights` (PiSSA, OLoRA, CorDA, LoftQ,
/// LoRA-GA) whose adapter only works on a base it modified, a pattern that is not a
/// regular expression, targets that select no module; [`LocalError::Tensor`] naming the
/// weights file and the key for a key that is not a LoRA weight of a linear projection, a
/// module the config does not select, a selected module whose `lora_A` or `lora_B` is
/// missing, or a shape that does not fit the layer and its rank. An adapter saved only as
/// `adapter_model.bin` (a PyTorch pickle) is refused, naming it.
pub fn load_adapter(model: &mut Model, dir: &Path) -> Result<LoraConfig, LocalError> {
    let cfg_path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| LocalError::io(&cfg_path, e))?;
    let file: AdapterConfig = serde_json::from_str(&text).map_err(|e| LocalError::Json {
        path: cfg_path.clone(),
        what: "adapter_config.json",
        message: e.to_string(),
    })?;
    refuse_unsupported(&file, &cfg_path)?;
    let st_path = dir.join(ADAPTER_WEIGHTS);
    if !st_path.exists() && dir.join("adapter_model.bin").exists() {
        return Err(LocalError::Unsupported {
            path: dir.join("adapter_model.bin"),
            message: format!(
                "a PyTorch pickle is not read; save the adapter as {ADAPTER_WEIGHTS} (PEFT's save_pretrained does by default)"
            ),
        });
    }
    let tensors = candle_core::safetensors::load(&st_path, model.device())
        .map_err(|e| LocalError::io(&st_path, e))?;

    // The modules the config selects, as PEFT would choose them on this model.
    let unsupported = |message: String| LocalError::Unsupported {
        path: cfg_path.clone(),
        message,
    };
    let Some(targets) = &file.target_modules else {
        return Err(unsupported("target_modules is missing or null".into()));
    };
    let target = Selector::new(targets, &cfg_path, "target_modules", true)?;
    let exclude = file
        .exclude_modules
        .as_ref()
        .map(|e| Selector::new(e, &cfg_path, "exclude_modules", false))
        .transpose()?;
    let layers = LayerFilter::new(&file, &cfg_path)?;
    let selected: std::collections::BTreeSet<String> = model
        .linears()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| {
            !exclude.as_ref().is_some_and(|e| e.selects(name))
                && target.selects(name)
                && (!matches!(target, Selector::List(_)) || layers.keeps(name))
        })
        .collect();
    if selected.is_empty() {
        return Err(unsupported(format!(
            "target_modules {targets:?} selects none of the model's projections (model.layers.N.self_attn.{{q,k,v,o}}_proj, model.layers.N.mlp.{{gate,up,down}}_proj)"
        )));
    }

    let mut modules: BTreeMap<String, (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
    // In key order, so that the error about a file with several faults is always the same.
    let mut tensors: Vec<(String, Tensor)> = tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, t) in tensors {
        let (module, which) = parse_key(&key).map_err(|message| LocalError::Tensor {
            path: st_path.clone(),
            tensor: key.clone(),
            message,
        })?;
        if !selected.contains(&module) {
            return Err(LocalError::Tensor {
                path: st_path.clone(),
                tensor: key,
                message: if model.linears().iter().any(|(n, _)| *n == module) {
                    format!(
                        "{ADAPTER_CONFIG} does not select this module (target_modules {targets:?})"
                    )
                } else {
                    "the model has no such projection (LoRA is read for the decoder layers' seven projections)".into()
                },
            });
        }
        let entry = modules.entry(module).or_default();
        if which == 0 {
            entry.0 = Some(t);
        } else {
            entry.1 = Some(t);
        }
    }
    let mut weights = Vec::new();
    for module in &selected {
        let (a, b) = modules.remove(module).unwrap_or_default();
        let (a, b) = match (a, b) {
            (Some(a), Some(b)) => (a, b),
            (a, _) => {
                let missing = if a.is_none() { "lora_A" } else { "lora_B" };
                return Err(LocalError::Tensor {
                    path: st_path.clone(),
                    tensor: format!("{PREFIX}{module}.{missing}.weight"),
                    message: format!(
                        "missing, and {ADAPTER_CONFIG} selects this module (target_modules {targets:?})"
                    ),
                });
            }
        };
        let rank = match file.rank_pattern.as_ref() {
            Some(p) => p.lookup(module, &cfg_path, "rank_pattern")?,
            None => None,
        };
        let r = match rank {
            Some(r) if r >= 1.0 && r.fract() == 0.0 => r as usize,
            Some(r) => {
                return Err(unsupported(format!(
                    "rank_pattern: rank {r} for {module} is not a positive integer"
                )));
            }
            None => file.r,
        };
        let alpha = match file.alpha_pattern.as_ref() {
            Some(p) => p.lookup(module, &cfg_path, "alpha_pattern")?,
            None => None,
        }
        .unwrap_or(file.lora_alpha);
        let scale = if file.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        };
        weights.push(ModuleWeights {
            module: module.clone(),
            a,
            b,
            r,
            scale,
        });
    }
    let target_modules = match targets {
        TargetModules::List(l) => l.clone(),
        // A regular expression or `all-linear`: the projections it selected.
        TargetModules::One(_) => selected
            .iter()
            .filter_map(|m| m.rsplit('.').next().map(String::from))
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
    config.validate()?;
    attach_weights(model, weights, config.lora_dropout, &st_path)?;
    Ok(config)
}

/// Refuses what PEFT's file says that this crate would not compute as PEFT does.
fn refuse_unsupported(file: &AdapterConfig, cfg_path: &Path) -> Result<(), LocalError> {
    let refuse = |message: String| {
        Err(LocalError::Unsupported {
            path: cfg_path.to_path_buf(),
            message,
        })
    };
    if file.peft_type != "LORA" {
        return refuse(format!("peft_type {:?} (only LORA)", file.peft_type));
    }
    if file.use_dora {
        return refuse("use_dora: DoRA adapters are not supported".into());
    }
    if file.bias != "none" {
        return refuse(format!(
            "bias {:?}: trained biases are not supported (only \"none\")",
            file.bias
        ));
    }
    if file.lora_bias {
        return refuse("lora_bias: a bias on lora_B is not supported".into());
    }
    if file.use_qalora {
        return refuse("use_qalora: QA-LoRA is not supported".into());
    }
    if let Some(m) = file.modules_to_save.as_ref().filter(|m| !m.is_empty()) {
        return refuse(format!(
            "modules_to_save {m:?}: fully trained modules are not supported"
        ));
    }
    for (key, value) in [
        ("layer_replication", &file.layer_replication),
        ("target_parameters", &file.target_parameters),
        ("trainable_token_indices", &file.trainable_token_indices),
        ("alora_invocation_tokens", &file.alora_invocation_tokens),
    ] {
        let set = match value {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Array(a)) => !a.is_empty(),
            Some(serde_json::Value::Object(o)) => !o.is_empty(),
            Some(_) => true,
        };
        if set {
            return refuse(format!("{key} is not supported"));
        }
    }
    if let Some(serde_json::Value::String(init)) = &file.init_lora_weights {
        let lower = init.to_ascii_lowercase();
        if ["pissa", "olora", "corda", "loftq", "lora_ga"]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            return refuse(format!(
                "init_lora_weights {init:?}: such an adapter only works on the base weights its initialization modified; save it with PEFT's path_initial_model_for_weight_conversion to get a plain LoRA adapter"
            ));
        }
    }
    if file.fan_in_fan_out {
        tracing::warn!(
            "{}: fan_in_fan_out is set, but the projections are linear layers: ignored, as PEFT does",
            cfg_path.display()
        );
    }
    Ok(())
}

/// `layers_to_transform` and `layers_pattern`, as PEFT applies them to a list of target
/// modules: the layer index is the first number after a `layers_pattern` segment (any
/// segment when none is given).
struct LayerFilter {
    indexes: Option<Vec<usize>>,
    patterns: Vec<regex::Regex>,
}

impl LayerFilter {
    fn new(file: &AdapterConfig, cfg_path: &Path) -> Result<Self, LocalError> {
        let indexes = match &file.layers_to_transform {
            None => None,
            Some(LayerIndexes::One(i)) => Some(vec![*i]),
            Some(LayerIndexes::List(l)) if l.is_empty() => None,
            Some(LayerIndexes::List(l)) => Some(l.clone()),
        };
        let names: Vec<String> = match &file.layers_pattern {
            None => Vec::new(),
            Some(TargetModules::One(s)) if s.is_empty() => Vec::new(),
            Some(TargetModules::One(s)) => vec![s.clone()],
            Some(TargetModules::List(l)) => l.clone(),
        };
        let mut patterns = Vec::new();
        if names.is_empty() {
            patterns.push(regex::Regex::new(r"^.*?\.[^.]*\.(\d+)\.").expect("a valid pattern"));
        }
        for name in names {
            patterns.push(
                regex::Regex::new(&format!(r"^(?:|.*?\.){name}\.(\d+)\."))
                    .map_err(|e| LocalError::Unsupported {
                        path: cfg_path.to_path_buf(),
                        message: format!("layers_pattern: {name:?} is not a regular expression this reader understands: {e}"),
                    })?,
            );
        }
        Ok(LayerFilter { indexes, patterns })
    }

    fn keeps(&self, module: &str) -> bool {
        let Some(indexes) = &self.indexes else {
            return true;
        };
        self.patterns
            .iter()
            .find_map(|p| p.captures(module))
            .and_then(|c| c[1].parse::<usize>().ok())
            .is_some_and(|i| indexes.contains(&i))
    }
}

/// A weight key of PEFT's to its module name and which half (0: `lora_A`, 1: `lora_B`):
/// `base_model.model.{module}.lora_A.weight`, also with the adapter name PEFT uses in
/// memory (`.lora_A.default.weight`). A message saying what the key is otherwise.
fn parse_key(key: &str) -> Result<(String, u8), String> {
    let rest = key
        .strip_prefix(PREFIX)
        .ok_or_else(|| "not a key of PEFT's (base_model.model.*)".to_owned())?;
    for (suffix, which) in [
        (".lora_A.weight", 0),
        (".lora_B.weight", 1),
        (".lora_A.default.weight", 0),
        (".lora_B.default.weight", 1),
    ] {
        if let Some(m) = rest.strip_suffix(suffix) {
            return Ok((m.to_owned(), which));
        }
    }
    Err(if rest.contains("lora_embedding_") {
        "a LoRA on an embedding is not supported".into()
    } else if rest.contains("lora_magnitude_vector") {
        "a DoRA magnitude vector: DoRA is not supported".into()
    } else if rest.contains(".lora_B.") && rest.ends_with(".bias") {
        "a bias on lora_B (lora_bias) is not supported".into()
    } else {
        "not a lora_A or lora_B weight".into()
    })
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

/// `candle_core::safetensors::save`, then the mode any new file gets under the process's
/// umask (0o644 under 022): the safetensors crate writes through a temporary file of mode
/// 0o600 and renames it, which would leave adapters and checkpoints readable by their owner
/// only (issue #26).
pub(crate) fn save_safetensors(
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
    path: &Path,
) -> Result<(), LocalError> {
    candle_core::safetensors::save(tensors, path).map_err(|e| LocalError::io(path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let probe = xlt_provider::tempfile_with_umask(dir).map_err(|e| LocalError::io(dir, e))?;
    let mode = probe
        .as_file()
        .metadata()
        .map_err(|e| LocalError::io(probe.path(), e))?
        .permissions();
    std::fs::set_permissions(path, mode).map_err(|e| LocalError::io(path, e))
}

#[cfg(test)]
mod tests {
    /// An adapter's or checkpoint's safetensors file gets the mode of any new file (what
    /// `File::create` gives under this process's umask), not the 0o600 of the temporary file
    /// the safetensors crate writes through.
    #[cfg(unix)]
    #[test]
    fn saved_safetensors_get_the_umask_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let t =
            candle_core::Tensor::zeros((2, 3), candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap();
        let tensors = std::collections::HashMap::from([("w".to_owned(), t)]);
        let path = dir.path().join("adapter_model.safetensors");
        super::save_safetensors(&tensors, &path).unwrap();
        let plain = dir.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        println!("saved {:o}, a new file {:o}", mode(&path), mode(&plain));
        assert_eq!(mode(&path), mode(&plain));
    }
}
