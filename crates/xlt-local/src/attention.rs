//! Scaled dot-product attention for inference on the CPU, one fused operation:
//! `softmax(q kᵀ · scale + mask) v` for every (sequence, head) pair in parallel, grouped-query
//! heads read in place (no repeated keys and values), the result laid out as the output
//! projection takes it.
//!
//! candle 0.11 runs each of the `batch × heads` small products (about 120 × 64 × 120 for a
//! Global-MMLU prompt) as its own gemm call, each split across threads that mostly wait,
//! then separate passes for the scale, the mask, the softmax and two layout copies; on issue
//! #12's 2-core benchmark that took 28% of a scoring pass once the projections ran on faer.
//! Here each pair is one task on the rayon pool and its products are single-threaded faer
//! calls. Training keeps the composition of candle operations (`Ops::Differentiable`), which
//! candle differentiates.

use crate::kernels::contiguous;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use faer::Par;
use rayon::prelude::*;

/// The attention of one layer: `q` `(b, heads, t, hd)`, `k` and `v` `(b, kv_heads, s, hd)`
/// (all contiguous, f32 or f64) to `(b, t, heads * hd)`. `mask`: additive, `(b or 1, 1, t, s)`,
/// contiguous, same dtype; `None` means no mask.
pub(crate) struct CpuAttention {
    pub(crate) scale: f64,
    pub(crate) mask: Option<Tensor>,
}

/// Whether [`CpuAttention`] computes in this dtype.
pub(crate) fn supported(dtype: candle_core::DType) -> bool {
    matches!(dtype, candle_core::DType::F32 | candle_core::DType::F64)
}

use crate::matmul::GemmFloat as Float;

/// Shapes of one call.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    heads: usize,
    kv_heads: usize,
    t: usize,
    s: usize,
    hd: usize,
    /// Rows of the mask's first dimension: `b` or 1; 0 without a mask.
    mask_b: usize,
}

fn one<T: Float>() -> T {
    <T as candle_core::WithDType>::from_f64(1.0)
}

/// [`crate::matmul::gemm`] on this thread: the pairs already run in parallel.
#[allow(clippy::too_many_arguments)]
fn product<T: Float>(
    dst: &mut [T],
    lhs: &[T],
    lhs_t: bool,
    rhs: &[T],
    rhs_t: bool,
    dims: (usize, usize, usize),
    alpha: T,
    add: bool,
) {
    crate::matmul::gemm(dst, (lhs, lhs_t), (rhs, rhs_t), dims, alpha, add, Par::Seq);
}

/// The attention weights of one (sequence, head) pair: `softmax(q kᵀ scale + mask)`,
/// `(t, s)`; `q` `(t, hd)`, `k` `(s, hd)`, `mask` `(t, s)`.
fn weights<T: Float>(q: &[T], k: &[T], mask: Option<&[T]>, d: Dims, scale: T) -> Vec<T> {
    let mut p = vec![T::default(); d.t * d.s];
    product(&mut p, q, false, k, true, (d.t, d.hd, d.s), scale, false);
    pulp::Arch::new().dispatch(SoftmaxRows {
        p: &mut p,
        mask,
        s: d.s,
    });
    p
}

/// Each row of `p` (`s` wide) plus its row of `mask`, then softmaxed in place, compiled for
/// the best vector instructions the CPU has. A `pulp` operation whose body is inlined
/// into the function pulp compiles for them (`#[inline(always)]`): passed as a closure to
/// [`crate::kernels::vectorized`], this loop stayed a function of its own compiled for the
/// baseline, where `floor` in e^x is a libm call per element (perf, issue #27).
struct SoftmaxRows<'a, T> {
    p: &'a mut [T],
    mask: Option<&'a [T]>,
    s: usize,
}

impl<T: Float> pulp::WithSimd for SoftmaxRows<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        softmax_rows(self.p, self.mask, self.s);
    }
}

#[inline(always)]
fn softmax_rows<T: Float>(p: &mut [T], mask: Option<&[T]>, s: usize) {
    for (i, row) in p.chunks_exact_mut(s).enumerate() {
        if let Some(m) = mask {
            for (x, &add) in row.iter_mut().zip(&m[i * s..(i + 1) * s]) {
                *x += add;
            }
        }
        let neg_inf = <T as candle_core::WithDType>::from_f64(f64::NEG_INFINITY);
        let max = lanes(row, neg_inf, |a, b| if b > a { b } else { a });
        // Three passes that each vectorize: a running sum in the exp loop would not
        // (float addition is not reassociated), the lane sums below are.
        for x in row.iter_mut() {
            *x = crate::kernels::Float::exp(*x - max);
        }
        let sum = lanes(row, T::default(), |a, b| a + b);
        let inv = one::<T>() / sum;
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
}

/// `xs` folded by `f` in eight interleaved lanes, then the lanes and the remainder in order:
/// a reduction the compiler can vectorize (a single running fold over floats it cannot
/// reorder). The order is fixed, so the result is the same on every run.
#[inline(always)]
fn lanes<T: Float>(xs: &[T], init: T, f: impl Fn(T, T) -> T) -> T {
    let mut acc = [init; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = f(*a, x);
        }
    }
    let mut r = acc.into_iter().fold(init, &f);
    for &x in rest {
        r = f(r, x);
    }
    r
}

/// The slices of one (sequence, head) pair: its queries, its key/value head's keys and
/// values, and its sequence's mask rows.
struct Inputs<'a, T> {
    q: &'a [T],
    k: &'a [T],
    v: &'a [T],
    mask: Option<&'a [T]>,
}

impl<T> Inputs<'_, T> {
    fn head(&self, d: Dims, bi: usize, h: usize) -> Inputs<'_, T> {
        let bh = bi * d.heads + h;
        let kvh = bi * d.kv_heads + h / (d.heads / d.kv_heads);
        let (qn, kn, mn) = (d.t * d.hd, d.s * d.hd, d.t * d.s);
        let mb = if d.mask_b == 1 { 0 } else { bi };
        Inputs {
            q: &self.q[bh * qn..(bh + 1) * qn],
            k: &self.k[kvh * kn..(kvh + 1) * kn],
            v: &self.v[kvh * kn..(kvh + 1) * kn],
            mask: self.mask.map(|m| &m[mb * mn..(mb + 1) * mn]),
        }
    }
}

/// Attention of every (sequence, head) pair; the result is `(b, t, heads * hd)`.
fn attend<T: Float>(x: &Inputs<'_, T>, d: Dims, scale: f64) -> Vec<T> {
    let scale = <T as candle_core::WithDType>::from_f64(scale);
    let heads: Vec<Vec<T>> = (0..d.b * d.heads)
        .into_par_iter()
        .map(|bh| {
            let h = x.head(d, bh / d.heads, bh % d.heads);
            let p = weights(h.q, h.k, h.mask, d, scale);
            let mut out = vec![T::default(); d.t * d.hd];
            product(
                &mut out,
                &p,
                false,
                h.v,
                false,
                (d.t, d.s, d.hd),
                one(),
                false,
            );
            out
        })
        .collect();
    // (b, heads, t, hd) -> (b, t, heads * hd)
    let mut out = vec![T::default(); d.b * d.t * d.heads * d.hd];
    for (bh, head) in heads.iter().enumerate() {
        let (bi, h) = (bh / d.heads, bh % d.heads);
        for (i, row) in head.chunks_exact(d.hd).enumerate() {
            let at = ((bi * d.t + i) * d.heads + h) * d.hd;
            out[at..at + d.hd].copy_from_slice(row);
        }
    }
    out
}

/// The gradients of [`attend`] for `q`, `k` and `v`, concatenated in that order (each in its
/// input's layout), from the gradient `g` `(b, t, heads * hd)` of its result. The weights
/// are recomputed, not kept from the forward pass. With `P` the weights, `dO` a head's
/// gradient: `dV = Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ⊙ (dP - rowsum(dP ⊙ P))`,
/// `dQ = scale dS K`, `dK = scale dSᵀ Q`; heads that share a key/value head add up.
fn attend_grad<T: Float>(x: &Inputs<'_, T>, g: &[T], d: Dims, scale: f64) -> Vec<T> {
    let scale = <T as candle_core::WithDType>::from_f64(scale);
    let rep = d.heads / d.kv_heads;
    let (qn, kn) = (d.t * d.hd, d.s * d.hd);
    // One task per (sequence, key/value head): its query heads' dq, its dk and dv.
    let groups: Vec<(Vec<T>, Vec<T>, Vec<T>)> = (0..d.b * d.kv_heads)
        .into_par_iter()
        .map(|bg| {
            let (bi, kvh) = (bg / d.kv_heads, bg % d.kv_heads);
            let mut dq = vec![T::default(); rep * qn];
            let (mut dk, mut dv) = (vec![T::default(); kn], vec![T::default(); kn]);
            let mut go = vec![T::default(); qn];
            for r in 0..rep {
                let h = kvh * rep + r;
                let x = x.head(d, bi, h);
                let p = weights(x.q, x.k, x.mask, d, scale);
                for i in 0..d.t {
                    let at = ((bi * d.t + i) * d.heads + h) * d.hd;
                    go[i * d.hd..(i + 1) * d.hd].copy_from_slice(&g[at..at + d.hd]);
                }
                product(&mut dv, &p, true, &go, false, (d.s, d.t, d.hd), one(), true);
                let mut ds = vec![T::default(); d.t * d.s];
                product(
                    &mut ds,
                    &go,
                    false,
                    x.v,
                    true,
                    (d.t, d.hd, d.s),
                    one(),
                    false,
                );
                for (dsr, pr) in ds.chunks_exact_mut(d.s).zip(p.chunks_exact(d.s)) {
                    let dot = dsr
                        .iter()
                        .zip(pr)
                        .fold(T::default(), |a, (&x, &y)| a + x * y);
                    for (x, &y) in dsr.iter_mut().zip(pr) {
                        *x = y * (*x - dot);
                    }
                }
                let dqh = &mut dq[r * qn..(r + 1) * qn];
                product(dqh, &ds, false, x.k, false, (d.t, d.s, d.hd), scale, false);
                product(
                    &mut dk,
                    &ds,
                    true,
                    x.q,
                    false,
                    (d.s, d.t, d.hd),
                    scale,
                    true,
                );
            }
            (dq, dk, dv)
        })
        .collect();
    let mut out = Vec::with_capacity(d.b * (d.heads * qn + 2 * d.kv_heads * kn));
    for (dq, _, _) in &groups {
        out.extend_from_slice(dq);
    }
    for (_, dk, _) in &groups {
        out.extend_from_slice(dk);
    }
    for (_, _, dv) in &groups {
        out.extend_from_slice(dv);
    }
    out
}

impl CpuAttention {
    fn dims(&self, q: &Layout, k: &Layout, v: &Layout) -> Result<Dims> {
        let (b, heads, t, hd) = q.shape().dims4()?;
        let (kb, kv_heads, s, khd) = k.shape().dims4()?;
        if (kb, khd) != (b, hd) || v.shape() != k.shape() || kv_heads == 0 {
            candle_core::bail!(
                "cpu-attention: q {:?}, k {:?}, v {:?} do not fit",
                q.shape(),
                k.shape(),
                v.shape()
            );
        }
        if !heads.is_multiple_of(kv_heads) {
            candle_core::bail!("cpu-attention: {heads} heads for {kv_heads} key/value heads");
        }
        let mask_b = match &self.mask {
            None => 0,
            Some(m) => {
                let (mb, one, mt, ms) = m.dims4()?;
                if one != 1 || mt != t || ms != s || (mb != 1 && mb != b) {
                    candle_core::bail!(
                        "cpu-attention: mask {:?} for {b} sequences of {t} queries, {s} keys",
                        m.shape()
                    );
                }
                mb
            }
        };
        Ok(Dims {
            b,
            heads,
            kv_heads,
            t,
            s,
            hd,
            mask_b,
        })
    }

    /// Runs `f` on the contiguous slices of `q`, `k`, `v` (and the mask).
    fn with_inputs<T: Float, R>(
        &self,
        q: (&CpuStorage, &Layout),
        k: (&CpuStorage, &Layout),
        v: (&CpuStorage, &Layout),
        f: impl FnOnce(&Inputs<'_, T>) -> R,
    ) -> Result<R> {
        let (q, k, v) = (
            contiguous::<T>("cpu-attention q", q.0, q.1)?,
            contiguous::<T>("cpu-attention k", k.0, k.1)?,
            contiguous::<T>("cpu-attention v", v.0, v.1)?,
        );
        match &self.mask {
            None => Ok(f(&Inputs {
                q,
                k,
                v,
                mask: None,
            })),
            Some(m) => crate::kernels::with_slice("cpu-attention mask", m, |mask| {
                f(&Inputs {
                    q,
                    k,
                    v,
                    mask: Some(mask),
                })
            }),
        }
    }
}

impl CustomOp3 for CpuAttention {
    fn name(&self) -> &'static str {
        "cpu-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        ql: &Layout,
        k: &CpuStorage,
        kl: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = self.dims(ql, kl, vl)?;
        let shape = Shape::from((d.b, d.t, d.heads * d.hd));
        let (q, k, v) = ((q, ql), (k, kl), (v, vl));
        let out = crate::kernels::by_dtype!("cpu-attention", q.0, |T| self.with_inputs(
            q,
            k,
            v,
            |x| attend::<T>(x, d, self.scale)
        )?);
        Ok((out, shape))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grads = Tensor::cat(
            &[&q.flatten_all()?, &k.flatten_all()?, &v.flatten_all()?],
            0,
        )?
        .apply_op2_no_bwd(
            &g.contiguous()?,
            &CpuAttentionGrad {
                forward: CpuAttention {
                    scale: self.scale,
                    mask: self.mask.clone(),
                },
                q: q.shape().clone(),
                kv: k.shape().clone(),
            },
        )?;
        let (nq, nk) = (q.elem_count(), k.elem_count());
        Ok((
            Some(grads.narrow(0, 0, nq)?.reshape(q.shape())?),
            Some(grads.narrow(0, nq, nk)?.reshape(k.shape())?),
            Some(grads.narrow(0, nq + nk, nk)?.reshape(v.shape())?),
        ))
    }
}

/// The gradients of [`CpuAttention`]: from `q`, `k`, `v` flattened and concatenated, and the
/// gradient of the result, `dq`, `dk`, `dv` flattened and concatenated.
struct CpuAttentionGrad {
    forward: CpuAttention,
    q: Shape,
    kv: Shape,
}

impl candle_core::CustomOp2 for CpuAttentionGrad {
    fn name(&self) -> &'static str {
        "cpu-attention-grad"
    }

    fn cpu_fwd(
        &self,
        qkv: &CpuStorage,
        l: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (nq, nk) = (self.q.elem_count(), self.kv.elem_count());
        let (ql, kl, vl) = (
            Layout::contiguous_with_offset(self.q.clone(), l.start_offset()),
            Layout::contiguous_with_offset(self.kv.clone(), l.start_offset() + nq),
            Layout::contiguous_with_offset(self.kv.clone(), l.start_offset() + nq + nk),
        );
        let d = self.forward.dims(&ql, &kl, &vl)?;
        let (q, k, v) = ((qkv, &ql), (qkv, &kl), (qkv, &vl));
        let scale = self.forward.scale;
        let out = crate::kernels::by_dtype!("cpu-attention-grad", qkv, |T| {
            let g = contiguous::<T>("cpu-attention gradient", g, gl)?;
            self.forward
                .with_inputs(q, k, v, |x| attend_grad(x, g, d, scale))?
        });
        Ok((out, Shape::from(nq + 2 * nk)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::max_diff;
    use candle_core::{D, DType, Device, Var};

    /// candle's composition: repeated key/value heads, scaled scores, additive mask,
    /// softmax, weighted values, `(b, t, heads * hd)`.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> Tensor {
        let (b, h, t, hd) = q.dims4().unwrap();
        let (_, kvh, s, _) = k.dims4().unwrap();
        let rep = |x: &Tensor| {
            x.unsqueeze(2)
                .unwrap()
                .broadcast_as((b, kvh, h / kvh, s, hd))
                .unwrap()
                .reshape((b, h, s, hd))
                .unwrap()
        };
        let scores = (q.matmul(&rep(k).t().unwrap()).unwrap() * scale).unwrap();
        let p = candle_nn::ops::softmax(&scores.broadcast_add(mask).unwrap(), D::Minus1).unwrap();
        p.matmul(&rep(v))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, t, h * hd))
            .unwrap()
    }

    /// The fused attention and its gradients for q, k and v equal candle's composition, with
    /// grouped-query heads and a per-sequence mask (padding and causality), in f64.
    #[test]
    fn attention_matches_candles_composition_forward_and_backward() -> Result<()> {
        let dev = Device::Cpu;
        let (b, h, kvh, t, hd) = (2, 4, 2, 5, 6);
        let q = Var::from_tensor(&Tensor::randn(0f64, 1.0, (b, h, t, hd), &dev)?)?;
        let k = Var::from_tensor(&Tensor::randn(0f64, 1.0, (b, kvh, t, hd), &dev)?)?;
        let v = Var::from_tensor(&Tensor::randn(0f64, 1.0, (b, kvh, t, hd), &dev)?)?;
        // Sequence 0 unpadded, sequence 1 with two pads on the left.
        let mut m = Vec::new();
        for pad in [0usize, 2] {
            for i in 0..t {
                for j in 0..t {
                    let visible = (j <= i && j >= pad) || j == i;
                    m.push(if visible { 0.0 } else { f64::NEG_INFINITY });
                }
            }
        }
        let mask = Tensor::from_vec(m, (b, 1, t, t), &dev)?;
        let scale = 0.4;
        let ours = q.apply_op3(
            k.as_tensor(),
            v.as_tensor(),
            CpuAttention {
                scale,
                mask: Some(mask.clone()),
            },
        )?;
        let theirs = reference(&q, &k, &v, &mask, scale);
        assert_eq!(ours.dims(), &[b, t, h * hd]);
        assert!(max_diff(&ours, &theirs) < 1e-12);
        let g = Tensor::randn(0f64, 1.0, (b, t, h * hd), &dev)?;
        let go = (ours * &g)?.sum_all()?.backward()?;
        let gt = (theirs * &g)?.sum_all()?.backward()?;
        for x in [&q, &k, &v] {
            let (o, r) = (
                go.get(x.as_tensor()).unwrap(),
                gt.get(x.as_tensor()).unwrap(),
            );
            assert_eq!(o.dims(), x.dims());
            assert!(max_diff(o, r) < 1e-10, "{}", max_diff(o, r));
        }
        Ok(())
    }

    /// Mismatched shapes and a mask of the wrong size are errors naming the shapes.
    #[test]
    fn misfit_shapes_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 3, 4, 2), DType::F32, &dev)?;
        let k = Tensor::zeros((1, 2, 4, 2), DType::F32, &dev)?;
        let op = |mask| CpuAttention { scale: 1.0, mask };
        let err = q.apply_op3(&k, &k, op(None)).unwrap_err().to_string();
        assert!(err.contains("3 heads for 2"), "{err}");
        let k = Tensor::zeros((1, 1, 4, 2), DType::F32, &dev)?;
        let bad = Tensor::zeros((1, 1, 4, 5), DType::F32, &dev)?;
        let err = q.apply_op3(&k, &k, op(Some(bad))).unwrap_err().to_string();
        assert!(err.contains("mask"), "{err}");
        Ok(())
    }
}
