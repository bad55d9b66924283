//! LoRA (Hu et al. 2021, <https://arxiv.org/abs/2106.09685>) on the decoder's linear
//! layers, in PEFT's vocabulary so that adapters move between tools: `r`, `lora_alpha`,
//! `lora_dropout`, `target_modules`, `lora_A` `(r, in)` and `lora_B` `(out, r)`, and
//! `scale = lora_alpha / r` (or `lora_alpha / sqrt(r)` with `use_rslora`). A wrapped layer
//! computes `y = x W^T + b + scale * dropout(x) A^T B^T`, as PEFT's `lora.Linear` does.
//!
//! Initialization follows PEFT's default (`init_lora_weights=True`): `lora_A` from
//! `kaiming_uniform_(a=sqrt(5))`, that is uniform on `±1/sqrt(in)`, and `lora_B` zeros, so
//! an adapter starts as the identity. Our random numbers come from a seeded ChaCha stream,
//! so the same seed gives the same adapter (not the same numbers as PyTorch's generator).

use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::LocalError;
use crate::llama::{Model, Ops};

/// The seven projections of a Llama-family layer, PEFT's names for them; the default
/// `target_modules` (defined once, in `xlt-provider`).
pub const DEFAULT_TARGET_MODULES: [&str; 7] = xlt_provider::LORA_TARGET_MODULES;

/// LoRA's hyperparameters, with PEFT's names and defaults as LoRA recipes use them
/// (r = 16, alpha = 32, dropout 0.05 on all seven projections).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// The rank `r` of the update `B A`.
    pub r: usize,
    /// `lora_alpha`: the update is scaled by `lora_alpha / r`.
    pub lora_alpha: f64,
    /// Dropout probability on the adapter's input, during training only.
    pub lora_dropout: f64,
    /// Module names to wrap, matched as PEFT does against the end of the module's full
    /// name (`q_proj` matches `model.layers.0.self_attn.q_proj`).
    pub target_modules: Vec<String>,
    /// Rank-stabilized scale `lora_alpha / sqrt(r)` (PEFT's `use_rslora`).
    #[serde(default)]
    pub use_rslora: bool,
}

impl Default for LoraConfig {
    /// `xlt_provider::LoraSpec::default()`, the one place the recipe defaults are defined.
    fn default() -> Self {
        let spec = xlt_provider::LoraSpec::default();
        LoraConfig {
            r: spec.rank as usize,
            lora_alpha: spec.alpha,
            lora_dropout: spec.dropout,
            target_modules: spec.target_modules,
            use_rslora: false,
        }
    }
}

impl LoraConfig {
    /// The factor on `B A`: `lora_alpha / r`, or `lora_alpha / sqrt(r)` with rsLoRA.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// Whether the module named `name` (`model.layers.0.self_attn.q_proj`) is a target.
    pub fn targets(&self, name: &str) -> bool {
        self.target_modules
            .iter()
            .any(|t| name == t || name.ends_with(&format!(".{t}")))
    }

    /// Checks the values are usable.
    ///
    /// # Errors
    /// [`LocalError::Invalid`] naming the field: `r` zero, `lora_dropout` outside `[0, 1)`,
    /// a non-finite `lora_alpha`, no target modules.
    pub fn validate(&self) -> Result<(), LocalError> {
        if self.r == 0 {
            return Err(LocalError::Invalid("lora r must be positive".into()));
        }
        if !self.lora_alpha.is_finite() || self.lora_alpha <= 0.0 {
            return Err(LocalError::Invalid(format!(
                "lora_alpha must be a positive number, not {}",
                self.lora_alpha
            )));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(LocalError::Invalid(format!(
                "lora_dropout must be in [0, 1), not {}",
                self.lora_dropout
            )));
        }
        if self.target_modules.is_empty() {
            return Err(LocalError::Invalid("lora target_modules is empty".into()));
        }
        Ok(())
    }
}

/// The adapter of one linear layer: trainable `lora_A` `(r, in)` and `lora_B` `(out, r)`.
#[derive(Debug, Clone)]
pub struct LoraWeights {
    pub(crate) a: Var,
    pub(crate) b: Var,
    pub(crate) scale: f64,
    pub(crate) dropout: f64,
    /// Set while training: dropout draws its masks from this stream; `None` means no
    /// dropout (evaluation).
    pub(crate) rng: Option<Arc<Mutex<ChaCha8Rng>>>,
    /// Read as constants by the forward pass: the model was built with fused kernels
    /// ([`Ops::Fused`], inference), which have no backward pass. Products with the variables
    /// themselves would record their inputs for one, so that every layer's input of a
    /// forward pass stayed alive until its output was dropped: about 1.2 MB per token on
    /// SmolLM2-135M, 440 MiB for a prompt of 350 tokens (issue #26).
    pub(crate) frozen: bool,
}

impl LoraWeights {
    /// While training with dropout: the probability and a fresh seed for one call's mask,
    /// the next number of the step's stream (so a step's masks follow from its seed).
    pub(crate) fn mask_seed(&self) -> Option<(f64, u64)> {
        use rand::RngCore;
        match &self.rng {
            Some(rng) if self.dropout > 0.0 => {
                let mut rng = rng.lock().unwrap_or_else(|e| e.into_inner());
                Some((self.dropout, rng.next_u64()))
            }
            _ => None,
        }
    }

    /// `lora_A` `(r, in)` and `lora_B` `(out, r)` as the forward pass takes them: the
    /// variables, or, [`frozen`](LoraWeights::frozen), the same storage recording no
    /// operation.
    pub(crate) fn factors(&self) -> (Tensor, Tensor) {
        let (a, b) = (self.a.as_tensor(), self.b.as_tensor());
        if self.frozen {
            (a.detach(), b.detach())
        } else {
            (a.clone(), b.clone())
        }
    }

    /// `scale * dropout(x) A^T B^T`: `x` `(rows, in)` to `(rows, out)`.
    pub(crate) fn delta(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = match &self.rng {
            Some(rng) if self.dropout > 0.0 => {
                let keep = 1.0 - self.dropout;
                let n = x.elem_count();
                let mask: Vec<f32> = {
                    let mut rng = rng.lock().unwrap_or_else(|e| e.into_inner());
                    (0..n)
                        .map(|_| {
                            if rng.random::<f64>() < keep {
                                (1.0 / keep) as f32
                            } else {
                                0.0
                            }
                        })
                        .collect()
                };
                let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
                (x * mask)?
            }
            _ => x.clone(),
        };
        let (a, b) = self.factors();
        let h = x.matmul(&a.t()?)?;
        h.matmul(&b.t()?)? * self.scale
    }
}

/// One wrapped layer's trainable tensors, by module name.
#[derive(Debug, Clone)]
pub struct LoraParam {
    /// The module's name in the checkpoint (`model.layers.0.self_attn.q_proj`).
    pub module: String,
    /// `lora_A`, `(r, in)`.
    pub a: Var,
    /// `lora_B`, `(out, r)`.
    pub b: Var,
}

/// Wraps every target linear layer of `model` in a fresh adapter (PEFT's initialization,
/// see the module docs), drawn from `seed`, and returns the new parameters in layer order.
///
/// # Errors
/// [`LocalError::Invalid`] for a config that fails [`LoraConfig::validate`], no layer
/// matching `target_modules`, or a layer that already has an adapter; tensor failures.
pub fn attach_lora(
    model: &mut Model,
    config: &LoraConfig,
    seed: u64,
) -> Result<Vec<LoraParam>, LocalError> {
    config.validate()?;
    let dtype = model.dtype();
    let device = model.device().clone();
    let frozen = model.ops() == Ops::Fused;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (name, lin) in model.linears_mut() {
        if !config.targets(&name) {
            continue;
        }
        if lin.lora.is_some() {
            return Err(LocalError::Invalid(format!(
                "{name} already has a LoRA adapter"
            )));
        }
        let (out_dim, in_dim) = lin.weight.dims2()?;
        let bound = 1.0 / (in_dim as f64).sqrt();
        let a: Vec<f64> = (0..config.r * in_dim)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let a = Tensor::from_vec(a, (config.r, in_dim), &device)?.to_dtype(dtype)?;
        let b = Tensor::zeros((out_dim, config.r), dtype, &device)?;
        let weights = LoraWeights {
            a: Var::from_tensor(&a)?,
            b: Var::from_tensor(&b)?,
            scale: config.scale(),
            dropout: config.lora_dropout,
            rng: None,
            frozen,
        };
        out.push(LoraParam {
            module: name,
            a: weights.a.clone(),
            b: weights.b.clone(),
        });
        lin.lora = Some(weights);
    }
    if out.is_empty() {
        return Err(LocalError::Invalid(format!(
            "no linear layer matches the LoRA target_modules {:?}",
            config.target_modules
        )));
    }
    Ok(out)
}

/// One module's adapter tensors as read from a file or a checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct ModuleWeights {
    /// The module's name in the checkpoint (`model.layers.0.self_attn.q_proj`).
    pub(crate) module: String,
    /// `lora_A`, `(r, in)`.
    pub(crate) a: Tensor,
    /// `lora_B`, `(out, r)`.
    pub(crate) b: Tensor,
    /// This module's rank (PEFT's `rank_pattern` may set it per module).
    pub(crate) r: usize,
    /// This module's factor on `B A` (from its own alpha and rank).
    pub(crate) scale: f64,
}

/// Wraps the named modules in adapters with the given tensors, each with its own rank and
/// scale. `dropout` is the adapters' dropout probability (off until
/// [`set_lora_dropout`] turns it on). Used to load an adapter and to resume training.
///
/// # Errors
/// [`LocalError::Tensor`] naming `source` and the module, for an unknown module or a shape
/// that does not fit the layer or the rank.
pub(crate) fn attach_weights(
    model: &mut Model,
    tensors: Vec<ModuleWeights>,
    dropout: f64,
    source: &std::path::Path,
) -> Result<Vec<LoraParam>, LocalError> {
    let dtype = model.dtype();
    let device = model.device().clone();
    let frozen = model.ops() == Ops::Fused;
    let mut by_name: std::collections::HashMap<String, ModuleWeights> =
        tensors.into_iter().map(|w| (w.module.clone(), w)).collect();
    let mut out = Vec::new();
    for (name, lin) in model.linears_mut() {
        let Some(w) = by_name.remove(&name) else {
            continue;
        };
        if lin.lora.is_some() {
            return Err(LocalError::Invalid(format!(
                "{name} already has a LoRA adapter"
            )));
        }
        let (out_dim, in_dim) = lin.weight.dims2()?;
        if w.a.dims() != [w.r, in_dim] || w.b.dims() != [out_dim, w.r] {
            return Err(LocalError::Tensor {
                path: source.to_path_buf(),
                tensor: name,
                message: format!(
                    "lora_A {:?} and lora_B {:?} do not fit a layer of (out, in) = ({out_dim}, {in_dim}) at r = {}",
                    w.a.dims(),
                    w.b.dims(),
                    w.r
                ),
            });
        }
        let weights = LoraWeights {
            a: Var::from_tensor(&w.a.to_dtype(dtype)?.to_device(&device)?)?,
            b: Var::from_tensor(&w.b.to_dtype(dtype)?.to_device(&device)?)?,
            scale: w.scale,
            dropout,
            rng: None,
            frozen,
        };
        out.push(LoraParam {
            module: name,
            a: weights.a.clone(),
            b: weights.b.clone(),
        });
        lin.lora = Some(weights);
    }
    if let Some(name) = by_name.keys().min() {
        return Err(LocalError::Tensor {
            path: source.to_path_buf(),
            tensor: name.clone(),
            message: "the adapter has this module but the model does not".into(),
        });
    }
    Ok(out)
}

/// The adapters attached to `model`, in layer order.
pub fn lora_params(model: &Model) -> Vec<LoraParam> {
    model
        .linears()
        .into_iter()
        .filter_map(|(module, lin)| {
            lin.lora.as_ref().map(|l| LoraParam {
                module,
                a: l.a.clone(),
                b: l.b.clone(),
            })
        })
        .collect()
}

/// Switches adapter dropout on (training, masks drawn from a stream seeded with `seed`) or
/// off (`None`: evaluation).
pub fn set_lora_dropout(model: &mut Model, seed: Option<u64>) {
    let rng = seed.map(|s| Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(s))));
    for (_, lin) in model.linears_mut() {
        if let Some(l) = lin.lora.as_mut() {
            l.rng = rng.clone();
        }
    }
}

/// A copy of `model` with every adapter folded into its layer, `W + scale * B A`, and no
/// adapters left: the same function (up to rounding) at the cost of a plain model.
///
/// # Errors
/// Tensor failures.
pub fn merge_lora(model: &Model) -> Result<Model, LocalError> {
    let mut merged = model.clone();
    for (_, lin) in merged.linears_mut() {
        if let Some(l) = lin.lora.take() {
            let dtype = lin.weight.dtype();
            // At least f32 for the sum, whatever the weights' dtype.
            let work = if dtype == DType::F64 {
                DType::F64
            } else {
                DType::F32
            };
            let ba =
                l.b.as_tensor()
                    .to_dtype(work)?
                    .matmul(&l.a.as_tensor().to_dtype(work)?)?;
            lin.weight = (lin.weight.to_dtype(work)? + (ba * l.scale)?)?
                .to_dtype(dtype)?
                .detach();
        }
    }
    Ok(merged)
}
