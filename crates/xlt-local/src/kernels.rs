//! Differentiable CPU kernels for training: RMS normalization, the rotary embedding and the
//! gated activation `silu(gate) * up`, each one operation with its own backward pass.
//!
//! candle 0.11's fused `rms_norm` and `rope` have no backward pass (candle issue #2168), and
//! their compositions from elementary operations (`rms_norm_slow`, `rope_slow`) keep every
//! intermediate tensor of every layer until the backward pass ends and spend most of a LoRA
//! step in element-wise passes and page faults (issue #13's benchmark: 16 GB and 20 s for a
//! step of 8 examples on SmolLM2-135M). These compute the same functions in one pass each,
//! in parallel over rows, keep only their inputs, and differentiate by hand (formulas on
//! each type; the finite-difference test in `tests/lora.rs` checks them on an f64 model).
//! f32 and f64 on the CPU; other dtypes and devices use candle's compositions.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

thread_local! {
    /// Set by [`with_candle_ops`] for the closure it runs.
    static CANDLE_OPS_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this crate's CPU-only kernels switched off on the calling thread: every
/// operation the model would run through `src/attention.rs`, `src/kernels.rs` or
/// `src/matmul.rs` (and the f32 widening of bf16 attention and `silu(gate) * up`) runs
/// through candle's own operations instead, the path every non-CPU device (CUDA) takes.
/// For tests that compare the two paths on the CPU, forward and backward (issue #25); the
/// switch is per thread, so tests running beside it are unaffected. Nests; restores the
/// previous state on return or panic.
pub fn with_candle_ops<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            CANDLE_OPS_ONLY.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CANDLE_OPS_ONLY.with(|c| c.replace(true)));
    f()
}

/// Whether this crate's CPU-only code paths may run for `t`: on the CPU, outside
/// [`with_candle_ops`]. Every choice of a CPU-only path goes through this function.
pub(crate) fn cpu_fast_path(t: &Tensor) -> bool {
    t.device().is_cpu() && !CANDLE_OPS_ONLY.with(std::cell::Cell::get)
}

/// Whether these kernels compute on `t`'s device and dtype.
pub(crate) fn supported(t: &Tensor) -> bool {
    cpu_fast_path(t) && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// A float these kernels compute in (f32, f64), with the arithmetic they need.
pub(crate) trait Float:
    candle_core::WithDType
    + Default
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
    + std::ops::MulAssign
{
    fn exp(self) -> Self;
}

impl Float for f32 {
    /// [`exp_f32`]: no library call, so that a loop of it vectorizes.
    #[inline(always)]
    fn exp(self) -> Self {
        exp_f32(self)
    }
}

/// `e^x` for f32 without a library call, so that a loop of it vectorizes (under
/// [`vectorized`]: AVX2 and FMA): Cephes' `expf` (S. L. Moshier, Cephes Math Library,
/// `expf.c`): `x = n ln 2 + r` with `|r| <= ln 2 / 2`, a degree-5 polynomial for `e^r`, and
/// `2^n` written into the exponent bits. Relative error below 2e-7 (about 2 ulp) on
/// [-87.3, 88.3]; `0` below (where `e^x` is subnormal or 0, as for a masked score of
/// `-inf`), `+inf` above, NaN for NaN.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two, so that n ln 2 is exact in its first part (Cody and Waite).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MAX: f32 = 88.376_26;
    const MIN: f32 = -87.336_55;
    let c = x.clamp(MIN, MAX);
    let n = (c * LOG2E + 0.5).floor();
    let r = c - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r2 + r + 1.0;
    // 2^n from the bits of n + 127 + 2^23, whose low mantissa bits are n + 127 (0..=255
    // for the clamped n), shifted into the exponent field. No float-to-integer cast and no
    // checked integer addition: the dev profile's overflow checks (and the cast's
    // saturation) kept this loop scalar.
    let scale = f32::from_bits((n + (127.0 + 8_388_608.0)).to_bits() << 23);
    let e = y * scale;
    if x < MIN {
        0.0
    } else if x > MAX {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        e
    }
}

impl Float for f64 {
    #[inline(always)]
    fn exp(self) -> Self {
        f64::exp(self)
    }
}

/// Runs `f` compiled for the best vector instructions this CPU has (AVX2 and FMA, or the
/// baseline), chosen at run time by `pulp`: the element-wise loops here vectorize only with
/// them, and a portable build targets SSE2.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// The contiguous slice of a CPU storage.
///
/// # Errors
/// A strided layout or another dtype, naming `what`.
pub(crate) fn contiguous<'a, T: candle_core::WithDType>(
    what: &str,
    s: &'a CpuStorage,
    l: &Layout,
) -> Result<&'a [T]> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{what} is not contiguous");
    };
    Ok(&T::cpu_storage_as_slice(s)?[a..b])
}

/// A small tensor's values (a norm's scale, a rotary table, an adapter's `A` or `B`),
/// copied out for use inside an operation.
pub(crate) fn values<T: candle_core::WithDType>(t: &Tensor) -> Result<Vec<T>> {
    t.contiguous()?.flatten_all()?.to_vec1::<T>()
}

/// Runs `f` on a CPU tensor's contiguous values in place, without a copy (a frozen weight,
/// a mask), inside an operation.
///
/// # Errors
/// The tensor is on another device, strided or of another dtype, naming `what`.
pub(crate) fn with_slice<T: candle_core::WithDType, R>(
    what: &str,
    t: &Tensor,
    f: impl FnOnce(&[T]) -> R,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(s) = &*storage else {
        candle_core::bail!("{what} is not on the CPU");
    };
    Ok(f(contiguous(what, s, layout)?))
}

/// Runs `f` on f32 or f64 storage and wraps the result.
macro_rules! by_dtype {
    ($what:expr, $s:expr, |$t:ident| $body:expr) => {
        match $s {
            CpuStorage::F32(_) => {
                type $t = f32;
                CpuStorage::F32($body)
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                CpuStorage::F64($body)
            }
            other => candle_core::bail!("{}: dtype {:?}", $what, other.dtype()),
        }
    };
}
pub(crate) use by_dtype;

/// The largest absolute difference between two tensors of one shape, as f64 (tests).
#[cfg(test)]
pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .and_then(|d| {
            d.abs()?
                .flatten_all()?
                .max(0)?
                .to_dtype(DType::F64)?
                .to_scalar()
        })
        .expect("two tensors of one shape")
}

// ---------------------------------------------------------------------------------------
// RMS normalization

/// `y = x / sqrt(mean(x²) + eps) * w` over the last dimension, for a frozen scale `w`
/// `(dim,)`; `x` `(..., dim)`. Backward (for `x` only, `r = 1 / sqrt(mean(x²) + eps)`,
/// `u = g * w`): `dx = r u - x r³ mean(u x)`.
pub(crate) struct RmsNorm {
    pub(crate) weight: Tensor,
    pub(crate) eps: f64,
}

fn rms_forward<T: Float>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
    let d = w.len();
    let mut y = vec![T::default(); x.len()];
    y.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(y, x)| {
        let ms: f64 = x.iter().map(|&v| v.to_f64() * v.to_f64()).sum::<f64>() / d as f64;
        let r = T::from_f64(1.0 / (ms + eps).sqrt());
        for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
            *y = x * r * w;
        }
    });
    y
}

fn rms_backward<T: Float>(x: &[T], w: &[T], g: &[T], eps: f64) -> Vec<T> {
    let d = w.len();
    let mut dx = vec![T::default(); x.len()];
    dx.par_chunks_mut(d)
        .zip(x.par_chunks(d).zip(g.par_chunks(d)))
        .for_each(|(dx, (x, g))| {
            vectorized(|| {
                let ms: f64 = x.iter().map(|&v| v.to_f64() * v.to_f64()).sum::<f64>() / d as f64;
                let r = 1.0 / (ms + eps).sqrt();
                let ux: f64 = x
                    .iter()
                    .zip(g)
                    .zip(w)
                    .map(|((&x, &g), &w)| (g * w).to_f64() * x.to_f64())
                    .sum::<f64>()
                    / d as f64;
                let (r_t, c) = (T::from_f64(r), T::from_f64(r * r * r * ux));
                for (((dx, &x), &g), &w) in dx.iter_mut().zip(x).zip(g).zip(w) {
                    *dx = r_t * g * w - x * c;
                }
            })
        });
    dx
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "xlt-rms-norm"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = l.shape().dims().last().copied().unwrap_or(0);
        if self.weight.dims() != [d] {
            candle_core::bail!("rms-norm: weight {:?} for rows of {d}", self.weight.shape());
        }
        let y = by_dtype!("rms-norm", x, |T| rms_forward::<T>(
            contiguous("rms-norm input", x, l)?,
            &values::<T>(&self.weight)?,
            self.eps
        ));
        Ok((y, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(
            &g.contiguous()?,
            &RmsNormGrad {
                weight: self.weight.clone(),
                eps: self.eps,
            },
        )?))
    }
}

/// The gradient of [`RmsNorm`] for `x`, from `(x, g)`.
struct RmsNormGrad {
    weight: Tensor,
    eps: f64,
}

impl CustomOp2 for RmsNormGrad {
    fn name(&self) -> &'static str {
        "xlt-rms-norm-grad"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dx = by_dtype!("rms-norm-grad", x, |T| rms_backward::<T>(
            contiguous("rms-norm input", x, xl)?,
            &values::<T>(&self.weight)?,
            contiguous("rms-norm gradient", g, gl)?,
            self.eps
        ));
        Ok((dx, xl.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------
// Rotary embedding

/// The rotation of `x` `(b, heads, t, hd)` in Hugging Face's "half" layout, by tables `cos`,
/// `sin` `(t, hd / 2)`: `y[i] = x[i] cos - x[i + hd/2] sin`, `y[i + hd/2] = x[i + hd/2] cos +
/// x[i] sin`. It is orthogonal, so its backward pass is the rotation by minus the angle.
pub(crate) struct Rope {
    pub(crate) cos: Tensor,
    pub(crate) sin: Tensor,
    /// Rotate by minus the angle (the backward pass).
    pub(crate) inverse: bool,
}

fn rope<T: Float>(x: &[T], cos: &[T], sin: &[T], t: usize, hd: usize, inverse: bool) -> Vec<T> {
    let mut y = vec![T::default(); x.len()];
    y.par_chunks_mut(t * hd)
        .zip(x.par_chunks(t * hd))
        .for_each(|(y, x)| vectorized(|| rope_head(x, y, (cos, sin), hd, inverse)));
    y
}

/// [`rope`] of one head's positions: `x`, `y` `(t, hd)`, tables `(t, hd / 2)`.
#[inline(always)]
fn rope_head<T: Float>(x: &[T], y: &mut [T], (cos, sin): (&[T], &[T]), hd: usize, inverse: bool) {
    let half = hd / 2;
    for ((x, y), (c, s)) in x
        .chunks_exact(hd)
        .zip(y.chunks_exact_mut(hd))
        .zip(cos.chunks_exact(half).zip(sin.chunks_exact(half)))
    {
        let (x1, x2) = x.split_at(half);
        let (y1, y2) = y.split_at_mut(half);
        for i in 0..half {
            let s = if inverse { -s[i] } else { s[i] };
            y1[i] = x1[i] * c[i] - x2[i] * s;
            y2[i] = x2[i] * c[i] + x1[i] * s;
        }
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "xlt-rope"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, _, t, hd) = l.shape().dims4()?;
        if self.cos.dims() != [t, hd / 2] || self.sin.dims() != [t, hd / 2] {
            candle_core::bail!(
                "rope: tables {:?} for {t} positions of {hd}",
                self.cos.shape()
            );
        }
        let y = by_dtype!("rope", x, |T| rope::<T>(
            contiguous("rope input", x, l)?,
            &values::<T>(&self.cos)?,
            &values::<T>(&self.sin)?,
            t,
            hd,
            self.inverse
        ));
        Ok((y, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(g.contiguous()?.apply_op1_no_bwd(&Rope {
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            inverse: !self.inverse,
        })?))
    }
}

// ---------------------------------------------------------------------------------------
// Gated activation

/// `silu(a) * b` element-wise, `a` and `b` of one shape (the MLP's gate and up projections).
/// With `σ = sigmoid(a)`: `da = g b σ (1 + a (1 - σ))`, `db = g a σ`.
pub(crate) struct SiluMul;

#[inline(always)]
fn sigmoid<T: Float>(a: T) -> T {
    T::from_f64(1.0) / (T::from_f64(1.0) + (-a).exp())
}

const CHUNK: usize = 4096;

fn silu_mul<T: Float>(a: &[T], b: &[T]) -> Vec<T> {
    let mut y = vec![T::default(); a.len()];
    y.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(y, (a, b))| {
            vectorized(|| {
                for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
                    *y = a * sigmoid(a) * b;
                }
            })
        });
    y
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "xlt-silu-mul"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if al.shape() != bl.shape() {
            candle_core::bail!("silu-mul: {:?} and {:?}", al.shape(), bl.shape());
        }
        let y = by_dtype!("silu-mul", a, |T| silu_mul::<T>(
            contiguous("silu-mul gate", a, al)?,
            contiguous("silu-mul up", b, bl)?
        ));
        Ok((y, al.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let both = a.apply_op3_no_bwd(b, &g.contiguous()?, &SiluMulGrad)?;
        let n = a.elem_count();
        Ok((
            Some(both.narrow(0, 0, n)?.reshape(a.shape())?),
            Some(both.narrow(0, n, n)?.reshape(b.shape())?),
        ))
    }
}

/// The gradients of [`SiluMul`] from `(a, b, g)`: `[da, db]` flattened and concatenated,
/// one sigmoid per element for both.
struct SiluMulGrad;

fn silu_mul_grad<T: Float>(a: &[T], b: &[T], g: &[T]) -> Vec<T> {
    let mut d = vec![T::default(); 2 * a.len()];
    let (da, db) = d.split_at_mut(a.len());
    da.par_chunks_mut(CHUNK)
        .zip(db.par_chunks_mut(CHUNK))
        .zip(
            a.par_chunks(CHUNK)
                .zip(b.par_chunks(CHUNK).zip(g.par_chunks(CHUNK))),
        )
        .for_each(|((da, db), (a, (b, g)))| {
            vectorized(|| {
                for ((((da, db), &a), &b), &g) in da.iter_mut().zip(db).zip(a).zip(b).zip(g) {
                    let s = sigmoid(a);
                    *da = g * b * s * (T::from_f64(1.0) + a * (T::from_f64(1.0) - s));
                    *db = g * a * s;
                }
            })
        });
    d
}

impl candle_core::CustomOp3 for SiluMulGrad {
    fn name(&self) -> &'static str {
        "xlt-silu-mul-grad"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = by_dtype!("silu-mul-grad", a, |T| silu_mul_grad::<T>(
            contiguous("silu-mul gate", a, al)?,
            contiguous("silu-mul up", b, bl)?,
            contiguous("silu-mul gradient", g, gl)?
        ));
        Ok((d, Shape::from(2 * al.shape().elem_count())))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn exp_f32_is_within_two_ulp_of_libm_and_exact_at_the_edges() {
        let mut worst = 0f64;
        let mut x = -87.3f32;
        while x < 88.3 {
            let (ours, libm) = (exp_f32(x), x.exp());
            let rel = (f64::from(ours) - f64::from(libm)).abs() / f64::from(libm);
            worst = worst.max(rel);
            x += 0.000_731;
        }
        eprintln!("largest relative error against libm: {worst:e}");
        assert!(
            worst < 2.5e-7,
            "relative error {worst:e} above 2.5e-7 (about 2 ulp)"
        );
        for (x, want) in [
            (0.0f32, 1.0f32),
            (f32::NEG_INFINITY, 0.0),
            (-1000.0, 0.0),
            (f32::INFINITY, f32::INFINITY),
            (100.0, f32::INFINITY),
        ] {
            assert_eq!(exp_f32(x), want, "exp({x})");
        }
        assert!(exp_f32(f32::NAN).is_nan());
    }
    use super::*;
    use candle_core::{D, Device, Var};

    /// Each kernel and its gradient equal candle's composition of elementary operations
    /// (which candle differentiates), in f64 to 1e-10 and in f32 to 1e-4.
    #[test]
    fn kernels_match_candles_compositions_forward_and_backward() -> Result<()> {
        let dev = Device::Cpu;
        for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-4)] {
            let x =
                Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 3, 5, 8), &dev)?.to_dtype(dtype)?)?;
            let up =
                Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 3, 5, 8), &dev)?.to_dtype(dtype)?)?;
            let g = Tensor::randn(0f64, 1.0, (2, 3, 5, 8), &dev)?.to_dtype(dtype)?;
            let w = Tensor::randn(1f64, 0.2, 8, &dev)?.to_dtype(dtype)?;
            let angles = Tensor::randn(0f64, 2.0, (5, 4), &dev)?;
            let (cos, sin) = (
                angles.cos()?.to_dtype(dtype)?,
                angles.sin()?.to_dtype(dtype)?,
            );
            let cases: Vec<(&str, Tensor, Tensor)> = vec![
                (
                    "rms-norm",
                    x.apply_op1(RmsNorm {
                        weight: w.clone(),
                        eps: 1e-5,
                    })?,
                    candle_nn::ops::rms_norm_slow(x.as_tensor(), &w, 1e-5)?,
                ),
                (
                    "rope",
                    x.apply_op1(Rope {
                        cos: cos.clone(),
                        sin: sin.clone(),
                        inverse: false,
                    })?,
                    candle_nn::rotary_emb::rope_slow(x.as_tensor(), &cos, &sin)?,
                ),
                (
                    "silu-mul",
                    x.apply_op2(up.as_tensor(), SiluMul)?,
                    (candle_nn::ops::silu(x.as_tensor())? * up.as_tensor())?,
                ),
            ];
            for (name, ours, theirs) in cases {
                assert!(max_diff(&ours, &theirs) < tol, "{name} {dtype:?} forward");
                let go = (ours * &g)?.sum_all()?.backward()?;
                let gt = (theirs * &g)?.sum_all()?.backward()?;
                for v in [&x, &up] {
                    match (go.get(v.as_tensor()), gt.get(v.as_tensor())) {
                        (Some(a), Some(b)) => {
                            assert!(max_diff(a, b) < tol, "{name} {dtype:?} gradient")
                        }
                        (None, None) => {}
                        _ => panic!("{name} {dtype:?}: a gradient on one side only"),
                    }
                }
            }
            // The norm is over the last dimension: a row scaled by 3 normalizes alike.
            let y = x.apply_op1(RmsNorm {
                weight: w.clone(),
                eps: 0.0,
            })?;
            let y3 = (x.as_tensor() * 3.0)?.apply_op1(RmsNorm {
                weight: w,
                eps: 0.0,
            })?;
            assert!(max_diff(&y, &y3) < tol);
            assert_eq!(y.sum(D::Minus1)?.dims(), &[2, 3, 5]);
        }
        Ok(())
    }

    /// Other dtypes are an error naming the kernel (callers check [`supported`] first).
    #[test]
    fn unsupported_dtype_is_an_error() -> Result<()> {
        let x = Tensor::zeros((2, 4), DType::BF16, &Device::Cpu)?;
        let err = x.apply_op2(&x, SiluMul).unwrap_err().to_string();
        assert!(err.contains("silu-mul"), "{err}");
        Ok(())
    }
}
