//! The Llama decoder family: Llama 2/3.x, SmolLM2, Qwen2/Qwen2.5 (bias on q, k and v
//! projections) and Qwen3 (RMS norms on q and k per head), in the shape of Hugging Face's
//! `modeling_llama.py`. Every weight is found by the checkpoint's own tensor name
//! (`model.layers.3.self_attn.q_proj.weight`) through a [`VarBuilder`] path; the model does
//! not know whether its weights came from safetensors, a GGUF file or a `VarMap`.
//!
//! The family members differ only in configuration: `model_type` decides the defaults of
//! `attention_bias` (Qwen2: true) and of the q/k norms (Qwen3), everything else is read from
//! `config.json` with Hugging Face's field names.

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::Deserialize;

/// Hugging Face's `rope_scaling` entry: `rope_type: "llama3"` (Llama 3.1+) or `"linear"`
/// (position interpolation: every frequency divided by `factor`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RopeScaling {
    /// `llama3` or `linear`; `default` means none.
    #[serde(alias = "type")]
    pub rope_type: String,
    /// Frequency divisor for long wavelengths.
    #[serde(default)]
    pub factor: Option<f64>,
    /// Llama 3: below this many wavelengths per context, frequencies are divided.
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    /// Llama 3: above this many, frequencies are kept.
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    /// Llama 3: the context length the model was pre-trained with.
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

/// A decoder's hyperparameters, read from `config.json` (Hugging Face's names).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    /// `llama`, `qwen2`, `qwen3` (also `mistral`, which is the same network).
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Vocabulary size: rows of the embedding and of the output projection.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); default: as many as query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Width of one head; default `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Epsilon of every RMS norm.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Base of the rotary frequencies.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Rotary frequency scaling (Llama 3.1+).
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// Context length the model was trained for (informative: positions are not capped).
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    /// The output projection is the embedding matrix (SmolLM2, small Qwen2.5).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Bias on the q, k, v and o projections; default: true for Qwen2 on q, k, v, false
    /// otherwise.
    #[serde(default)]
    pub attention_bias: Option<bool>,
    /// Standard deviation of the random initialization (tests and training from scratch).
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    /// Token ids that end a turn, when the config says (`eos_token_id`: one or a list).
    #[serde(default, deserialize_with = "one_or_many")]
    pub eos_token_id: Vec<u32>,
    /// The beginning-of-sequence token, when the config says.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
}

fn default_model_type() -> String {
    "llama".into()
}
fn default_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_init_range() -> f64 {
    0.02
}

/// `eos_token_id` is a number in some configs, a list in others, and null in a few.
pub(crate) fn one_or_many<'de, Dz: serde::Deserializer<'de>>(
    d: Dz,
) -> std::result::Result<Vec<u32>, Dz::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        Some(OneOrMany::One(x)) => vec![x],
        Some(OneOrMany::Many(v)) => v,
        None => Vec::new(),
    })
}

impl Config {
    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Whether q, k and v projections carry a bias (Qwen2: yes).
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias
            .unwrap_or(self.model_type == "qwen2" || self.model_type == "qwen2_moe")
    }

    /// Whether the output projection of attention carries a bias (only when
    /// `attention_bias` says so: Qwen2 has none there).
    pub fn o_bias(&self) -> bool {
        self.attention_bias.unwrap_or(false)
    }

    /// Whether queries and keys are RMS-normalized per head before the rotation (Qwen3).
    pub fn qk_norm(&self) -> bool {
        self.model_type == "qwen3"
    }

    /// Checks the architecture is one this file implements and the sizes are consistent.
    ///
    /// # Errors
    /// A message naming the offending field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        match self.model_type.as_str() {
            "llama" | "mistral" | "qwen2" | "qwen3" => {}
            other => {
                return Err(format!(
                    "model_type {other:?} is not supported (llama, mistral, qwen2, qwen3)"
                ));
            }
        }
        if self.num_attention_heads == 0 || self.kv_heads() == 0 {
            return Err("num_attention_heads and num_key_value_heads must be positive".into());
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head_dim {} must be even for rotary embeddings",
                self.head_dim()
            ));
        }
        if let Some(s) = &self.rope_scaling
            && !matches!(s.rope_type.as_str(), "llama3" | "linear" | "default")
        {
            return Err(format!(
                "rope_scaling.rope_type {:?} is not supported (llama3, linear)",
                s.rope_type
            ));
        }
        Ok(())
    }
}

/// Which kernels the normalization, rotation and softmax use.
///
/// candle 0.11's fused `rms_norm`, `rope` and `softmax_last_dim` have no backward pass
/// (candle issue #2168): a model built on them computes the right values, but gradients stop
/// there. Training uses [`Ops::Differentiable`]; inference uses [`Ops::Fused`]. Both compute
/// the same function (a test checks it to float precision).
///
/// On the CPU in f32 and f64 both modes use this crate's own operations where they exist
/// (`src/attention.rs`, `src/kernels.rs`, `src/matmul.rs`: attention, RMS norm, rotary
/// embedding, `silu(gate) * up`, the frozen and LoRA-wrapped projections), each one pass with
/// a hand-written backward pass checked against candle's compositions and finite
/// differences; elsewhere (bf16, CUDA) training composes candle's elementary operations
/// (`rms_norm_slow`, `rope_slow`, `ops::softmax`), which candle differentiates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ops {
    /// Fused kernels without backward passes (inference).
    #[default]
    Fused,
    /// Differentiable operations (training).
    Differentiable,
}

/// A linear layer `y = x W^T + b` with `W` of shape `(out, in)` as Hugging Face stores it.
/// Its own type (not `candle_nn::Linear`) so that LoRA can wrap it with the same names:
/// with an adapter attached ([`crate::attach_lora`]), `y = x W^T + b + scale * B A x`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub(crate) weight: Tensor,
    pub(crate) bias: Option<Tensor>,
    pub(crate) lora: Option<crate::lora::LoraWeights>,
}

impl Linear {
    /// Reads `{prefix}.weight` `(out, in)` and, if `bias`, `{prefix}.bias` `(out,)`.
    ///
    /// # Errors
    /// A missing or misshapen tensor.
    pub fn new(
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        std: f64,
        vb: VarBuilder<'_>,
    ) -> Result<Self> {
        let weight = vb.get_with_hints(
            (out_dim, in_dim),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: std,
            },
        )?;
        let bias = if bias {
            Some(vb.get_with_hints(
                out_dim,
                "bias",
                Init::Randn {
                    mean: 0.0,
                    stdev: std,
                },
            )?)
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            lora: None,
        })
    }

    /// Wraps existing tensors.
    pub fn from_weights(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear {
            weight,
            bias,
            lora: None,
        }
    }

    /// The weight, `(out, in)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Linear {
    /// `(..., in)` to `(..., out)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (in_dim, lead) = dims.split_last().expect("linear input has a dimension");
        let rows: usize = lead.iter().product();
        let x = x.reshape((rows, *in_dim))?;
        // On the CPU in f32/f64, an adapter runs inside the product: base product and
        // adapter in one operation with its own backward pass (the dropout mask drawn again
        // there, not kept).
        let fused = self.lora.as_ref().filter(|lora| {
            crate::kernels::supported(&x)
                && !self.weight.track_op()
                && [self.weight.dtype(), lora.a.dtype(), lora.b.dtype()] == [x.dtype(); 3]
        });
        let y = if let Some(lora) = fused {
            let (a, b) = lora.factors();
            x.contiguous()?.apply_op3(
                &a,
                &b,
                crate::matmul::LoraMatmul {
                    weight: self.weight.clone(),
                    scale: lora.scale,
                    dropout: lora.mask_seed(),
                },
            )?
        } else if !self.weight.track_op() && crate::kernels::cpu_fast_path(&x) {
            // A frozen weight on the CPU: faer's product, and under training only x's
            // gradient (candle's own matmul would also compute and keep one for the weight).
            x.contiguous()?
                .apply_op1(crate::matmul::FrozenMatmul(self.weight.clone()))?
        } else {
            x.matmul(&self.weight.t()?)?
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let y = match (&self.lora, fused) {
            (Some(lora), None) => (y + lora.delta(&x)?)?,
            _ => y,
        };
        let mut out = lead.to_vec();
        out.push(self.weight.dim(0)?);
        y.reshape(out)
    }
}

/// RMS normalization over the last dimension, with a learned scale.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
    ops: Ops,
}

impl RmsNorm {
    /// Reads `{prefix}.weight` `(dim,)`.
    ///
    /// # Errors
    /// A missing or misshapen tensor.
    pub fn new(dim: usize, eps: f64, ops: Ops, vb: VarBuilder<'_>) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        Ok(RmsNorm { weight, eps, ops })
    }
}

impl Module for RmsNorm {
    /// `(..., dim)` to the same shape. Computed in f32 whatever the weights' dtype, as
    /// Hugging Face does.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self.ops {
            Ops::Fused => candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps as f32),
            Ops::Differentiable
                if crate::kernels::supported(x)
                    && !self.weight.track_op()
                    && self.weight.dtype() == x.dtype() =>
            {
                x.contiguous()?.apply_op1(crate::kernels::RmsNorm {
                    weight: self.weight.clone(),
                    eps: self.eps,
                })
            }
            Ops::Differentiable => candle_nn::ops::rms_norm_slow(x, &self.weight, self.eps as f32),
        }
    }
}

/// Rotary position embedding in Hugging Face's "half" layout (the first and second halves
/// of each head rotate together), with Llama 3 or linear frequency scaling.
#[derive(Debug, Clone)]
pub struct Rotary {
    /// `(head_dim / 2,)`, f32.
    inv_freq: Tensor,
    ops: Ops,
}

impl Rotary {
    /// The frequencies for `cfg` on `device`: `inv_freq[i] = rope_theta^(-2i / head_dim)`,
    /// rescaled as `cfg.rope_scaling` says (Llama 3: as `transformers`'
    /// `_compute_llama3_parameters`; linear: divided by `factor`).
    ///
    /// # Errors
    /// Tensor creation.
    pub fn new(cfg: &Config, ops: Ops, device: &Device) -> Result<Self> {
        let dim = cfg.head_dim();
        let mut inv: Vec<f64> = (0..dim / 2)
            .map(|i| 1.0 / cfg.rope_theta.powf((2 * i) as f64 / dim as f64))
            .collect();
        match cfg.rope_scaling.as_ref() {
            Some(s) if s.rope_type == "llama3" => {
                let factor = s.factor.unwrap_or(8.0);
                let low = s.low_freq_factor.unwrap_or(1.0);
                let high = s.high_freq_factor.unwrap_or(4.0);
                let old = s.original_max_position_embeddings.unwrap_or(8192) as f64;
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                for f in &mut inv {
                    let wavelen = 2.0 * std::f64::consts::PI / *f;
                    if wavelen > low_wavelen {
                        *f /= factor;
                    } else if wavelen >= high_wavelen {
                        let smooth = (old / wavelen - low) / (high - low);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
            Some(s) if s.rope_type == "linear" => {
                let factor = s.factor.unwrap_or(1.0);
                for f in &mut inv {
                    *f /= factor;
                }
            }
            _ => {}
        }
        let inv: Vec<f32> = inv.into_iter().map(|f| f as f32).collect();
        Ok(Rotary {
            inv_freq: Tensor::new(inv.as_slice(), device)?,
            ops,
        })
    }

    /// Divides frequency `i` by `factors[i]`, as llama.cpp's rope does with the
    /// `rope_freqs.weight` tensor of a GGUF file (where its converter stores Llama 3.1
    /// scaling: 1 for short wavelengths, `factor` for long ones, interpolated between).
    ///
    /// # Errors
    /// `factors` is not `head_dim / 2` long.
    pub fn with_freq_factors(self, factors: &[f32]) -> Result<Self> {
        let n = self.inv_freq.dim(0)?;
        if factors.len() != n {
            candle_core::bail!(
                "{} rotary frequency factors for {n} frequencies (head_dim / 2)",
                factors.len()
            );
        }
        let factors = Tensor::new(factors, self.inv_freq.device())?;
        Ok(Rotary {
            inv_freq: self.inv_freq.div(&factors)?,
            ops: self.ops,
        })
    }

    /// The frequencies `(head_dim / 2,)`, f32, in radians per position.
    pub fn inv_freq(&self) -> &Tensor {
        &self.inv_freq
    }

    /// The tables for positions `offset..offset + seq` in `dtype`: computed once per
    /// forward pass and shared by every layer.
    ///
    /// # Errors
    /// Tensor creation.
    pub fn tables(&self, offset: usize, seq: usize, dtype: DType) -> Result<RotaryTables> {
        let positions: Vec<u32> = (offset..offset + seq).map(|p| p as u32).collect();
        self.tables_at(&positions, dtype)
    }

    /// The tables for the given positions, one row each, in `dtype` (packed sequences: each
    /// sequence's positions restart after the shared context).
    ///
    /// # Errors
    /// Tensor creation.
    pub fn tables_at(&self, positions: &[u32], dtype: DType) -> Result<RotaryTables> {
        let pos = Tensor::new(positions, self.inv_freq.device())?
            .to_dtype(DType::F32)?
            .reshape((positions.len(), 1))?;
        let freqs = pos.broadcast_mul(&self.inv_freq.reshape((1, ()))?)?;
        Ok(RotaryTables {
            cos: freqs.cos()?.to_dtype(dtype)?,
            sin: freqs.sin()?.to_dtype(dtype)?,
            ops: self.ops,
        })
    }

    /// Rotates `x` `(batch, heads, seq, head_dim)` for positions starting at `offset`
    /// ([`Rotary::tables`] then [`RotaryTables::apply`]).
    ///
    /// # Errors
    /// Shape errors.
    pub fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let (_, _, seq, _) = x.dims4()?;
        self.tables(offset, seq, x.dtype())?.apply(x)
    }
}

/// Cosines and sines of the rotation for a run of positions, each `(seq, head_dim / 2)`.
#[derive(Debug, Clone)]
pub struct RotaryTables {
    cos: Tensor,
    sin: Tensor,
    ops: Ops,
}

impl RotaryTables {
    /// Rotates `x` `(batch, heads, seq, head_dim)`; `seq` must be the tables' length.
    ///
    /// # Errors
    /// Shape errors.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        match self.ops {
            Ops::Fused => candle_nn::rotary_emb::rope(&x, &self.cos, &self.sin),
            Ops::Differentiable if crate::kernels::supported(&x) => {
                x.apply_op1(crate::kernels::Rope {
                    cos: self.cos.clone(),
                    sin: self.sin.clone(),
                    inverse: false,
                })
            }
            Ops::Differentiable => candle_nn::rotary_emb::rope_slow(&x, &self.cos, &self.sin),
        }
    }
}

fn softmax_last_dim(x: &Tensor, ops: Ops) -> Result<Tensor> {
    match ops {
        Ops::Fused => candle_nn::ops::softmax_last_dim(x),
        Ops::Differentiable => candle_nn::ops::softmax(x, D::Minus1),
    }
}

/// Keys and values of the positions seen so far, per layer, each
/// `(batch, kv_heads, seen, head_dim)`.
#[derive(Debug, Clone, Default)]
pub struct Cache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl Cache {
    /// An empty cache for `layers` layers.
    pub fn new(layers: usize) -> Self {
        Cache {
            layers: vec![None; layers],
        }
    }

    /// Positions already in the cache.
    pub fn seen(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }

    /// Bytes the keys and values hold.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }

    /// This cache of one sequence (batch 1) for `batch` sequences that all continue it:
    /// each layer's keys and values repeated along the batch.
    ///
    /// # Errors
    /// A cache of more than one sequence.
    pub fn repeated(&self, batch: usize) -> Result<Cache> {
        let repeat = |t: &Tensor| -> Result<Tensor> {
            if t.dim(0)? != 1 {
                candle_core::bail!(
                    "only a cache of one sequence is repeated, not {:?}",
                    t.dims()
                );
            }
            if batch == 1 {
                Ok(t.clone())
            } else {
                t.repeat((batch, 1, 1, 1))
            }
        };
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Some((k, v)) => Ok(Some((repeat(k)?, repeat(v)?))),
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(Cache { layers })
    }
}

/// Self-attention with grouped-query heads.
#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    ops: Ops,
}

/// Where a layer's attention finds the keys and values its queries see.
enum Keys<'a> {
    /// A (padded) batch: this layer's cache, which the step's keys and values extend, and an
    /// additive mask (causal when `None`; see [`Attention::forward`]).
    Cache {
        mask: Option<&'a Tensor>,
        cache: &'a mut Option<(Tensor, Tensor)>,
    },
    /// Packed sequences (batch 1, `lengths` summing to the step's length), each continuing
    /// the shared context's keys and values `(1, kv_heads, c, head_dim)` of this layer,
    /// which are not extended ([`crate::attention::PackedAttention`]).
    Packed {
        lengths: &'a [usize],
        context: Option<&'a (Tensor, Tensor)>,
    },
}

impl Attention {
    /// Reads `{prefix}.{q,k,v,o}_proj` and, for Qwen3, `{prefix}.{q,k}_norm`.
    ///
    /// # Errors
    /// A missing or misshapen tensor.
    pub fn new(cfg: &Config, ops: Ops, vb: VarBuilder<'_>) -> Result<Self> {
        let (h, hd, kv) = (cfg.hidden_size, cfg.head_dim(), cfg.kv_heads());
        let nh = cfg.num_attention_heads;
        let std = cfg.initializer_range;
        let qkv_bias = cfg.qkv_bias();
        let (q_norm, k_norm) = if cfg.qk_norm() {
            (
                Some(RmsNorm::new(hd, cfg.rms_norm_eps, ops, vb.pp("q_norm"))?),
                Some(RmsNorm::new(hd, cfg.rms_norm_eps, ops, vb.pp("k_norm"))?),
            )
        } else {
            (None, None)
        };
        Ok(Attention {
            q_proj: Linear::new(h, nh * hd, qkv_bias, std, vb.pp("q_proj"))?,
            k_proj: Linear::new(h, kv * hd, qkv_bias, std, vb.pp("k_proj"))?,
            v_proj: Linear::new(h, kv * hd, qkv_bias, std, vb.pp("v_proj"))?,
            o_proj: Linear::new(nh * hd, h, cfg.o_bias(), std, vb.pp("o_proj"))?,
            q_norm,
            k_norm,
            heads: nh,
            kv_heads: kv,
            head_dim: hd,
            ops,
        })
    }

    /// `x` `(batch, seq, hidden)` to `(batch, seq, hidden)`. `rope`: the rotation of this
    /// step's positions (continuing from what `cache` holds). `mask`, when given, is added
    /// to the scores: `(batch or 1, 1, seq, seen + seq)` with 0 where a query may look and
    /// `-inf` where not. Without a mask, attention is causal with no padding (or `seq` is 1).
    /// Appends this step's keys and values to `cache`.
    ///
    /// # Errors
    /// Shape errors.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RotaryTables,
        mask: Option<&Tensor>,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        self.forward_keys(x, rope, Keys::Cache { mask, cache })
    }

    fn forward_keys(&self, x: &Tensor, rope: &RotaryTables, keys: Keys<'_>) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        // (b, t, heads * hd) -> (b, t, heads, hd), normalized per head (Qwen3),
        // -> (b, heads, t, hd).
        let split = |y: Tensor, heads: usize, norm: &Option<RmsNorm>| -> Result<Tensor> {
            let y = y.reshape((b, t, heads, self.head_dim))?;
            let y = match norm {
                Some(n) => n.forward(&y)?,
                None => y,
            };
            y.transpose(1, 2)?.contiguous()
        };
        let q = split(self.q_proj.forward(x)?, self.heads, &self.q_norm)?;
        let k = split(self.k_proj.forward(x)?, self.kv_heads, &self.k_norm)?;
        let v = split(self.v_proj.forward(x)?, self.kv_heads, &None)?;
        let q = rope.apply(&q)?;
        let k = rope.apply(&k)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let (mask, cache) = match keys {
            Keys::Cache { mask, cache } => (mask, cache),
            Keys::Packed { lengths, context } => {
                // bf16 computes in f32 and rounds once, as the padded path does below.
                let work = if crate::attention::supported(x.dtype()) {
                    x.dtype()
                } else {
                    DType::F32
                };
                let context = match context {
                    Some((k, v)) => Some((k.to_dtype(work)?, v.to_dtype(work)?)),
                    None => None,
                };
                let op = crate::attention::PackedAttention {
                    scale,
                    lengths: lengths.to_vec(),
                    context,
                };
                let y = q
                    .to_dtype(work)?
                    .apply_op3(&k.to_dtype(work)?, &v.to_dtype(work)?, op)?;
                return self.o_proj.forward(&y.to_dtype(x.dtype())?);
            }
        };
        let offset = cache.as_ref().map_or(0, |(k, _)| k.dim(2).unwrap_or(0));
        let (k, v) = match cache.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        *cache = Some((k.clone(), v.clone()));
        if crate::kernels::cpu_fast_path(x) && crate::attention::supported(x.dtype()) {
            // On the CPU: one operation with its own backward pass, (b, t, heads * hd) out.
            let causal;
            let mask = match mask {
                Some(m) => Some(m.contiguous()?),
                None if t > 1 => {
                    causal = causal_mask(t, offset, x.dtype(), x.device())?;
                    Some(causal)
                }
                None => None,
            };
            let y = q.apply_op3(
                &k.contiguous()?,
                &v.contiguous()?,
                crate::attention::CpuAttention { scale, mask },
            )?;
            return self.o_proj.forward(&y);
        }
        if crate::kernels::cpu_fast_path(x) && x.dtype() == DType::BF16 {
            // bf16 on the CPU: the same operation in f32, the output rounded to
            // bf16 once. candle's composition below would round the scores to bf16 before
            // the softmax (8 bits of mantissa: a score near 16 moves by up to 0.06, each
            // attention weight by up to 6%), which PyTorch's fused attention does not do
            // (issue #26: bf16 log-probabilities drifted by more than 0.1 nat).
            let f32 = |t: &Tensor| t.to_dtype(DType::F32);
            let mask = match mask {
                Some(m) => Some(f32(m)?.contiguous()?),
                None if t > 1 => Some(causal_mask(t, offset, DType::F32, x.device())?),
                None => None,
            };
            let y = f32(&q)?.apply_op3(
                &f32(&k)?.contiguous()?,
                &f32(&v)?.contiguous()?,
                crate::attention::CpuAttention { scale, mask },
            )?;
            return self.o_proj.forward(&y.to_dtype(DType::BF16)?);
        }
        let rep = self.heads / self.kv_heads;
        let k = repeat_kv(&k, rep)?;
        let v = repeat_kv(&v, rep)?;
        // (b, heads, t, hd) x (b, heads, hd, s) -> (b, heads, t, s)
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None if t > 1 => {
                scores.broadcast_add(&causal_mask(t, offset, x.dtype(), x.device())?)?
            }
            None => scores,
        };
        let dtype = scores.dtype();
        // At least f32; f64 stays f64 (the finite-difference test of the training path).
        let work = if dtype == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let probs = softmax_last_dim(&scores.to_dtype(work)?, self.ops)?.to_dtype(dtype)?;
        // (b, heads, t, s) x (b, heads, s, hd) -> (b, heads, t, hd) -> (b, t, heads * hd)
        let y = probs.matmul(&v.contiguous()?)?;
        let y = y
            .transpose(1, 2)?
            .reshape((b, t, self.heads * self.head_dim))?;
        self.o_proj.forward(&y)
    }
}

/// `(b, kv_heads, s, hd)` to `(b, kv_heads * rep, s, hd)`, each key/value head repeated for
/// the `rep` query heads that share it.
fn repeat_kv(x: &Tensor, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return Ok(x.clone());
    }
    let (b, kv, s, hd) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, kv, rep, s, hd))?
        .reshape((b, kv * rep, s, hd))
}

/// `(1, 1, t, offset + t)`: 0 where key position <= query position, `-inf` after.
fn causal_mask(t: usize, offset: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let s = offset + t;
    let v: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..s).map(move |j| {
                if j <= offset + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(v, (1, 1, t, s), device)?.to_dtype(dtype)
}

/// The gated MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    /// Reads `{prefix}.{gate,up,down}_proj`.
    ///
    /// # Errors
    /// A missing or misshapen tensor.
    pub fn new(cfg: &Config, vb: VarBuilder<'_>) -> Result<Self> {
        let (h, i, std) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.initializer_range,
        );
        Ok(Mlp {
            gate_proj: Linear::new(h, i, false, std, vb.pp("gate_proj"))?,
            up_proj: Linear::new(h, i, false, std, vb.pp("up_proj"))?,
            down_proj: Linear::new(i, h, false, std, vb.pp("down_proj"))?,
        })
    }
}

impl Module for Mlp {
    /// `(..., hidden)` to `(..., hidden)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (gate, up) = (self.gate_proj.forward(x)?, self.up_proj.forward(x)?);
        let h = if crate::kernels::supported(&gate) {
            // One pass, with its own backward pass (the composition keeps three tensors).
            gate.contiguous()?
                .apply_op2(&up.contiguous()?, crate::kernels::SiluMul)?
        } else if crate::kernels::cpu_fast_path(&gate) && gate.dtype() == DType::BF16 {
            // bf16 on the CPU: the same pass in f32, rounded once (candle's bf16 `silu` and
            // product round after each of their four steps).
            let f32 = |t: &Tensor| t.to_dtype(DType::F32)?.contiguous();
            f32(&gate)?
                .apply_op2(&f32(&up)?, crate::kernels::SiluMul)?
                .to_dtype(DType::BF16)?
        } else {
            (candle_nn::ops::silu(&gate)? * up)?
        };
        self.down_proj.forward(&h)
    }
}

/// One pre-norm decoder layer.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    /// Reads `{prefix}.{input_layernorm, self_attn, post_attention_layernorm, mlp}`.
    ///
    /// # Errors
    /// A missing or misshapen tensor.
    pub fn new(cfg: &Config, ops: Ops, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(DecoderLayer {
            input_layernorm: RmsNorm::new(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                ops,
                vb.pp("input_layernorm"),
            )?,
            self_attn: Attention::new(cfg, ops, vb.pp("self_attn"))?,
            post_attention_layernorm: RmsNorm::new(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                ops,
                vb.pp("post_attention_layernorm"),
            )?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
        })
    }

    /// `(batch, seq, hidden)` to the same; see [`Attention::forward`] for `rope` and `mask`.
    ///
    /// # Errors
    /// Shape errors.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RotaryTables,
        mask: Option<&Tensor>,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        self.forward_keys(x, rope, Keys::Cache { mask, cache })
    }

    fn forward_keys(&self, x: &Tensor, rope: &RotaryTables, keys: Keys<'_>) -> Result<Tensor> {
        let h = self
            .self_attn
            .forward_keys(&self.input_layernorm.forward(x)?, rope, keys)?;
        let x = (x + h)?;
        let h = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&x)?)?;
        x + h
    }
}

/// The decoder: embedding, layers, final norm and output projection (`lm_head`, or the
/// embedding matrix when tied).
#[derive(Debug, Clone)]
pub struct Model {
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: Rotary,
    config: Config,
}

impl Model {
    /// Builds the model from `vb` rooted at the checkpoint's top level (`model.*`,
    /// `lm_head.weight`). With a `VarMap`-backed builder, missing weights are created with
    /// the config's `initializer_range` (norms at 1).
    ///
    /// # Errors
    /// A missing or misshapen tensor, with candle's message naming it.
    pub fn new(cfg: &Config, ops: Ops, vb: VarBuilder<'_>) -> Result<Self> {
        let m = vb.pp("model");
        let embed_tokens = m.get_with_hints(
            (cfg.vocab_size, cfg.hidden_size),
            "embed_tokens.weight",
            Init::Randn {
                mean: 0.0,
                stdev: cfg.initializer_range,
            },
        )?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, ops, m.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, ops, m.pp("norm"))?;
        let lm_head = if cfg.tie_word_embeddings {
            Linear::from_weights(embed_tokens.clone(), None)
        } else {
            Linear::new(
                cfg.hidden_size,
                cfg.vocab_size,
                false,
                cfg.initializer_range,
                vb.pp("lm_head"),
            )?
        };
        Ok(Model {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary: Rotary::new(cfg, ops, vb.device())?,
            config: cfg.clone(),
        })
    }

    /// The linear layers of the decoder layers, by their module names in the checkpoint
    /// (`model.layers.0.self_attn.q_proj`, ..., `model.layers.0.mlp.down_proj`), in layer
    /// order; the output projection is not among them. LoRA attaches to these.
    pub fn linears(&self) -> Vec<(String, &Linear)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let a = &l.self_attn;
            let m = &l.mlp;
            for (name, lin) in [
                ("self_attn.q_proj", &a.q_proj),
                ("self_attn.k_proj", &a.k_proj),
                ("self_attn.v_proj", &a.v_proj),
                ("self_attn.o_proj", &a.o_proj),
                ("mlp.gate_proj", &m.gate_proj),
                ("mlp.up_proj", &m.up_proj),
                ("mlp.down_proj", &m.down_proj),
            ] {
                out.push((format!("model.layers.{i}.{name}"), lin));
            }
        }
        out
    }

    /// [`Model::linears`], mutable.
    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            let a = &mut l.self_attn;
            let m = &mut l.mlp;
            for (name, lin) in [
                ("self_attn.q_proj", &mut a.q_proj),
                ("self_attn.k_proj", &mut a.k_proj),
                ("self_attn.v_proj", &mut a.v_proj),
                ("self_attn.o_proj", &mut a.o_proj),
                ("mlp.gate_proj", &mut m.gate_proj),
                ("mlp.up_proj", &mut m.up_proj),
                ("mlp.down_proj", &mut m.down_proj),
            ] {
                out.push((format!("model.layers.{i}.{name}"), lin));
            }
        }
        out
    }

    /// The rotary embedding.
    pub fn rotary(&self) -> &Rotary {
        &self.rotary
    }

    /// This model with rotary frequency `i` divided by `factors[i]` (see
    /// [`Rotary::with_freq_factors`]): how a GGUF file's `rope_freqs.weight` applies.
    ///
    /// # Errors
    /// `factors` is not `head_dim / 2` long.
    pub fn with_rope_freq_factors(mut self, factors: &[f32]) -> Result<Self> {
        self.rotary = self.rotary.with_freq_factors(factors)?;
        Ok(self)
    }

    /// Whether the kernels are fused (inference) or differentiable (training).
    pub fn ops(&self) -> Ops {
        self.rotary.ops
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// An empty cache for this model.
    pub fn new_cache(&self) -> Cache {
        Cache::new(self.layers.len())
    }

    /// Token ids `(batch, seq)` (u32) to final hidden states `(batch, seq, hidden)`, after
    /// the final norm. Positions continue from what `cache` holds, and this step's keys and
    /// values are appended to it. `mask`: see [`Attention::forward`].
    ///
    /// # Errors
    /// Shape errors, ids out of the vocabulary.
    pub fn forward_hidden(
        &self,
        input_ids: &Tensor,
        cache: &mut Cache,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let mut x = self
            .embed_tokens
            .index_select(&input_ids.flatten_all()?, 0)?
            .reshape((b, t, self.config.hidden_size))?;
        if cache.layers.len() != self.layers.len() {
            *cache = self.new_cache();
        }
        // Built once here and shared by every layer: the rotation of this step's positions
        // and, for an unpadded prompt, the causal mask.
        let offset = cache.seen();
        let rope = self.rotary.tables(offset, t, x.dtype())?;
        let causal = match mask {
            None if t > 1 => Some(causal_mask(t, offset, x.dtype(), x.device())?),
            _ => None,
        };
        let mask = mask.or(causal.as_ref());
        for (layer, c) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.forward(&x, &rope, mask, c)?;
        }
        self.norm.forward(&x)
    }

    /// Whether every projection's product runs on faer's kernels ([`crate::matmul`]): each
    /// base weight frozen (not a training variable) and each adapter in the weight's dtype.
    pub(crate) fn products_on_faer(&self) -> bool {
        self.linears().iter().all(|(_, l)| {
            !l.weight.track_op()
                && l.lora
                    .as_ref()
                    .is_none_or(|a| [a.a.dtype(), a.b.dtype()] == [l.weight.dtype(); 2])
        })
    }

    /// Whether [`Model::forward_packed`] runs here: on the CPU, in f32, f64 or bf16.
    pub fn packs(&self) -> bool {
        self.device().is_cpu() && matches!(self.dtype(), DType::F32 | DType::F64 | DType::BF16)
    }

    /// Packed sequences, each continuing `context` (the keys and values of a shared
    /// beginning, batch 1, or an empty cache), to their final hidden states after the final
    /// norm, `(total, hidden)` in the order of `input_ids`. `input_ids` holds the sequences'
    /// token ids one after another, `lengths` how many each has (no padding anywhere); a
    /// sequence's positions start at the context's length, and its tokens see the context
    /// and their own sequence's earlier tokens only. `context` is not extended.
    ///
    /// Each sequence's attention runs by itself (`attention::PackedAttention`), so
    /// a batch computes no padding and its attention no cross-sequence scores; the
    /// projections run over every sequence's tokens at once.
    ///
    /// # Errors
    /// Not [`Model::packs`]; `lengths` empty, with a 0, or not summing to `input_ids`'
    /// length; a context of more than one sequence; ids out of the vocabulary.
    pub fn forward_packed(
        &self,
        input_ids: &[u32],
        lengths: &[usize],
        context: &Cache,
    ) -> Result<Tensor> {
        if !self.packs() {
            candle_core::bail!(
                "packed sequences run on the CPU in f32, f64 or bf16, not {:?} on {:?}",
                self.dtype(),
                self.device()
            );
        }
        if lengths.is_empty()
            || lengths.contains(&0)
            || lengths.iter().sum::<usize>() != input_ids.len()
        {
            candle_core::bail!(
                "sequence lengths {lengths:?} for {} packed token ids",
                input_ids.len()
            );
        }
        let layers: Vec<Option<&(Tensor, Tensor)>> = if context.layers.len() == self.layers.len() {
            context.layers.iter().map(Option::as_ref).collect()
        } else if context.layers.is_empty() {
            vec![None; self.layers.len()]
        } else {
            candle_core::bail!(
                "a context cache of {} layers for a model of {}",
                context.layers.len(),
                self.layers.len()
            );
        };
        if let Some((k, _)) = layers.iter().flatten().next()
            && k.dim(0)? != 1
        {
            candle_core::bail!("a packed batch continues one context, not {:?}", k.dims());
        }
        let c = context.seen();
        let positions: Vec<u32> = lengths
            .iter()
            .flat_map(|&l| (c..c + l).map(|p| p as u32))
            .collect();
        let total = input_ids.len();
        let ids = Tensor::new(input_ids, self.device())?;
        let mut x = self.embed_tokens.index_select(&ids, 0)?.reshape((
            1,
            total,
            self.config.hidden_size,
        ))?;
        let rope = self.rotary.tables_at(&positions, x.dtype())?;
        for (layer, context) in self.layers.iter().zip(layers) {
            x = layer.forward_keys(&x, &rope, Keys::Packed { lengths, context })?;
        }
        self.norm.forward(&x.squeeze(0)?)
    }

    /// Token ids `(batch, seq)`, unpadded and without a cache, to the hidden states after
    /// the embedding and after each decoder layer (`num_hidden_layers + 1` tensors
    /// `(batch, seq, hidden)`), then the final norm's output: what `transformers` returns
    /// with `output_hidden_states=True`, except that its last entry is after the norm and
    /// this list has that one in addition. For numerical diagnostics (one dtype against
    /// another, layer by layer); inference uses [`Model::forward_hidden`].
    ///
    /// # Errors
    /// Shape errors, ids out of the vocabulary.
    pub fn hidden_states(&self, input_ids: &Tensor) -> Result<Vec<Tensor>> {
        let (b, t) = input_ids.dims2()?;
        let mut x = self
            .embed_tokens
            .index_select(&input_ids.flatten_all()?, 0)?
            .reshape((b, t, self.config.hidden_size))?;
        let rope = self.rotary.tables(0, t, x.dtype())?;
        let causal = if t > 1 {
            Some(causal_mask(t, 0, x.dtype(), x.device())?)
        } else {
            None
        };
        let mut out = vec![x.clone()];
        for layer in &self.layers {
            x = layer.forward(&x, &rope, causal.as_ref(), &mut None)?;
            out.push(x.clone());
        }
        out.push(self.norm.forward(&x)?);
        Ok(out)
    }

    /// Hidden states `(..., hidden)` to logits `(..., vocab)`, in the model's dtype.
    ///
    /// # Errors
    /// Shape errors.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)
    }

    /// Hidden states `(..., hidden)` to logits `(..., vocab)` in f32 (f64 stays f64), for
    /// log-probabilities. In bf16 the product is accumulated in f32 either way (candle's CPU
    /// matmul widens bf16 to f32), but [`Model::logits`] rounds the result back to bf16: 8
    /// bits of mantissa, so a logit near 20 moves by up to 0.06, and every log-probability
    /// with it (issue #26). Here the hidden state and the output matrix are widened first
    /// and the logits are never rounded. Without an adapter on the output projection.
    ///
    /// # Errors
    /// Shape errors.
    pub fn logits_f32(&self, hidden: &Tensor) -> Result<Tensor> {
        match hidden.dtype() {
            DType::F32 | DType::F64 => self.lm_head.forward(hidden),
            _ => {
                let head = Linear::from_weights(
                    self.lm_head.weight.to_dtype(DType::F32)?,
                    self.lm_head
                        .bias
                        .as_ref()
                        .map(|b| b.to_dtype(DType::F32))
                        .transpose()?,
                );
                head.forward(&hidden.to_dtype(DType::F32)?)
            }
        }
    }

    /// Token ids `(batch, seq)` to logits `(batch, seq, vocab)`: [`Model::forward_hidden`]
    /// then [`Model::logits`].
    ///
    /// # Errors
    /// As those.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        cache: &mut Cache,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.logits(&self.forward_hidden(input_ids, cache, mask)?)
    }
}
