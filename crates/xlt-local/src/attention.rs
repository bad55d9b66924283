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
        softmax_row(row);
    }
}

/// `row` softmaxed in place.
#[inline(always)]
fn softmax_row<T: Float>(row: &mut [T]) {
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

/// Causal attention over packed sequences (no padding) that all continue one shared
/// context, for inference on the CPU: FlashAttention's variable-length layout
/// (`cu_seqlens`), here with a prefix of keys and values every sequence sees.
///
/// `q` is `(1, heads, total, hd)`, `k` and `v` `(1, kv_heads, total, hd)`, each sequence's
/// positions a run of `total` in order (`lengths`, summing to `total`); `context` holds the
/// shared keys and values `(1, kv_heads, c, hd)` (`c` may be 0, or no context at all).
/// Query `i` of a sequence sees the `c` context positions and its own sequence's positions
/// `0..=i`, nothing of another sequence. The result is `(1, total, heads * hd)`. A
/// sequence's numbers do not depend on which sequences are packed beside it or where.
/// No backward pass (inference only).
pub(crate) struct PackedAttention {
    pub(crate) scale: f64,
    pub(crate) lengths: Vec<usize>,
    pub(crate) context: Option<(Tensor, Tensor)>,
}

/// Shapes of a packed call: `c` context positions, sequences starting at `starts`.
struct Packed<'a> {
    heads: usize,
    kv_heads: usize,
    total: usize,
    hd: usize,
    c: usize,
    lengths: &'a [usize],
    starts: Vec<usize>,
}

/// The keys and values of a packed call: this step's and the context's (empty when none).
struct PackedInputs<'a, T> {
    q: &'a [T],
    k: &'a [T],
    v: &'a [T],
    ck: &'a [T],
    cv: &'a [T],
}

/// Packed attention of every (sequence, head) pair: `(total, heads * hd)`.
fn attend_packed<T: Float>(x: &PackedInputs<'_, T>, d: &Packed<'_>, scale: f64) -> Vec<T> {
    use faer::reborrow::ReborrowMut;
    use faer::{Accum, MatMut, MatRef};
    let scale = <T as candle_core::WithDType>::from_f64(scale);
    let rep = d.heads / d.kv_heads;
    let (n, c, hd) = (d.lengths.len(), d.c, d.hd);
    let pairs: Vec<Vec<T>> = (0..n * d.heads)
        .into_par_iter()
        .map(|ih| {
            let (i, h) = (ih / d.heads, ih % d.heads);
            let (start, len) = (d.starts[i], d.lengths[i]);
            let kvh = h / rep;
            let q = &x.q[(h * d.total + start) * hd..(h * d.total + start + len) * hd];
            let at = (kvh * d.total + start) * hd;
            let (k, v) = (&x.k[at..at + len * hd], &x.v[at..at + len * hd]);
            let cat = kvh * c * hd;
            let (ck, cv) = (&x.ck[cat..cat + c * hd], &x.cv[cat..cat + c * hd]);
            let s = c + len;
            // Scores (len, c + len): the context's columns, then the sequence's own.
            let mut p = vec![T::default(); len * s];
            let qm = MatRef::from_row_major_slice(q, len, hd);
            {
                let mut pm = MatMut::from_row_major_slice_mut(&mut p, len, s);
                if c > 0 {
                    faer::linalg::matmul::matmul(
                        pm.rb_mut().subcols_mut(0, c),
                        Accum::Replace,
                        qm,
                        MatRef::from_row_major_slice(ck, c, hd).transpose(),
                        scale,
                        Par::Seq,
                    );
                }
                faer::linalg::matmul::matmul(
                    pm.subcols_mut(c, len),
                    Accum::Replace,
                    qm,
                    MatRef::from_row_major_slice(k, len, hd).transpose(),
                    scale,
                    Par::Seq,
                );
            }
            pulp::Arch::new().dispatch(CausalSoftmaxRows { p: &mut p, s, c });
            let mut out = vec![T::default(); len * hd];
            let pm = MatRef::from_row_major_slice(&p, len, s);
            let mut om = MatMut::from_row_major_slice_mut(&mut out, len, hd);
            if c > 0 {
                faer::linalg::matmul::matmul(
                    om.rb_mut(),
                    Accum::Replace,
                    pm.subcols(0, c),
                    MatRef::from_row_major_slice(cv, c, hd),
                    one(),
                    Par::Seq,
                );
            }
            faer::linalg::matmul::matmul(
                om,
                if c > 0 { Accum::Add } else { Accum::Replace },
                pm.subcols(c, len),
                MatRef::from_row_major_slice(v, len, hd),
                one(),
                Par::Seq,
            );
            out
        })
        .collect();
    // (sequence, head, len, hd) -> (total, heads * hd)
    let mut out = vec![T::default(); d.total * d.heads * hd];
    for (ih, pair) in pairs.iter().enumerate() {
        let (i, h) = (ih / d.heads, ih % d.heads);
        for (j, row) in pair.chunks_exact(hd).enumerate() {
            let at = ((d.starts[i] + j) * d.heads + h) * hd;
            out[at..at + hd].copy_from_slice(row);
        }
    }
    out
}

/// Row `j` of `p` (`s` wide: `c` context columns, then the sequence's own) softmaxed over its
/// first `c + j + 1` entries, the rest set to 0 (causal), compiled for the best vector
/// instructions the CPU has (as [`SoftmaxRows`]).
struct CausalSoftmaxRows<'a, T> {
    p: &'a mut [T],
    s: usize,
    c: usize,
}

impl<T: Float> pulp::WithSimd for CausalSoftmaxRows<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for (j, row) in self.p.chunks_exact_mut(self.s).enumerate() {
            let (seen, hidden) = row.split_at_mut(self.c + j + 1);
            softmax_row(seen);
            hidden.fill(T::default());
        }
    }
}

impl PackedAttention {
    fn dims(&self, q: &Layout, k: &Layout, v: &Layout) -> Result<Packed<'_>> {
        let (b, heads, total, hd) = q.shape().dims4()?;
        let (kb, kv_heads, kt, khd) = k.shape().dims4()?;
        if b != 1 || (kb, kt, khd) != (1, total, hd) || v.shape() != k.shape() || kv_heads == 0 {
            candle_core::bail!(
                "packed-attention: q {:?}, k {:?}, v {:?} do not fit",
                q.shape(),
                k.shape(),
                v.shape()
            );
        }
        if !heads.is_multiple_of(kv_heads) {
            candle_core::bail!("packed-attention: {heads} heads for {kv_heads} key/value heads");
        }
        if self.lengths.iter().sum::<usize>() != total || self.lengths.contains(&0) {
            candle_core::bail!(
                "packed-attention: sequence lengths {:?} for {total} positions",
                self.lengths
            );
        }
        let c = match &self.context {
            None => 0,
            Some((ck, cv)) => {
                let (cb, ckv, c, chd) = ck.dims4()?;
                if (cb, ckv, chd) != (1, kv_heads, hd) || cv.shape() != ck.shape() {
                    candle_core::bail!(
                        "packed-attention: context keys {:?} and values {:?} for {kv_heads} \
                         key/value heads of {hd}",
                        ck.shape(),
                        cv.shape()
                    );
                }
                c
            }
        };
        let starts = self
            .lengths
            .iter()
            .scan(0, |at, &l| {
                let s = *at;
                *at += l;
                Some(s)
            })
            .collect();
        Ok(Packed {
            heads,
            kv_heads,
            total,
            hd,
            c,
            lengths: &self.lengths,
            starts,
        })
    }
}

impl CustomOp3 for PackedAttention {
    fn name(&self) -> &'static str {
        "packed-attention"
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
        let shape = Shape::from((1, d.total, d.heads * d.hd));
        let out = crate::kernels::by_dtype!("packed-attention", q, |T| {
            let inputs = |ck: &[T], cv: &[T]| -> Result<Vec<T>> {
                let x = PackedInputs {
                    q: contiguous::<T>("packed-attention q", q, ql)?,
                    k: contiguous::<T>("packed-attention k", k, kl)?,
                    v: contiguous::<T>("packed-attention v", v, vl)?,
                    ck,
                    cv,
                };
                Ok(attend_packed(&x, &d, self.scale))
            };
            match &self.context {
                None => inputs(&[], &[])?,
                Some((ck, cv)) => {
                    let ck = ck.contiguous()?;
                    let cv = cv.contiguous()?;
                    crate::kernels::with_slice("packed-attention context keys", &ck, |ck| {
                        crate::kernels::with_slice("packed-attention context values", &cv, |cv| {
                            inputs(ck, cv)
                        })
                    })???
                }
            }
        });
        Ok((out, shape))
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

    /// Packed sequences after a shared context: each sequence's rows equal candle's
    /// composition over the context's keys and values and its own, with the causal mask
    /// offset by the context, alone (batch 1); with grouped-query heads, in f64; and the
    /// same bits whichever sequences are packed beside it, and in which order.
    #[test]
    fn packed_attention_equals_each_sequence_alone_after_the_context() -> Result<()> {
        let dev = Device::Cpu;
        let (h, kvh, hd) = (6, 2, 4);
        let lengths = [3usize, 1, 5];
        let total: usize = lengths.iter().sum();
        let q = Tensor::randn(0f64, 1.0, (1, h, total, hd), &dev)?;
        let k = Tensor::randn(0f64, 1.0, (1, kvh, total, hd), &dev)?;
        let v = Tensor::randn(0f64, 1.0, (1, kvh, total, hd), &dev)?;
        let scale = 0.45;
        for c in [0usize, 4] {
            let context = (c > 0)
                .then(|| -> Result<_> {
                    Ok((
                        Tensor::randn(0f64, 1.0, (1, kvh, c, hd), &dev)?,
                        Tensor::randn(0f64, 1.0, (1, kvh, c, hd), &dev)?,
                    ))
                })
                .transpose()?;
            let op = |lengths: &[usize]| PackedAttention {
                scale,
                lengths: lengths.to_vec(),
                context: context.clone(),
            };
            let packed = q.apply_op3(&k, &v, op(&lengths))?;
            assert_eq!(packed.dims(), &[1, total, h * hd]);
            let mut start = 0;
            let mut alone = Vec::new();
            for &len in &lengths {
                let rows = |x: &Tensor| x.narrow(2, start, len);
                let (qs, ks, vs) = (rows(&q)?, rows(&k)?, rows(&v)?);
                let (kf, vf) = match &context {
                    Some((ck, cv)) => (Tensor::cat(&[ck, &ks], 2)?, Tensor::cat(&[cv, &vs], 2)?),
                    None => (ks.clone(), vs.clone()),
                };
                let mask: Vec<f64> = (0..len)
                    .flat_map(|i| {
                        (0..c + len).map(move |j| if j <= c + i { 0.0 } else { f64::NEG_INFINITY })
                    })
                    .collect();
                let mask = Tensor::from_vec(mask, (1, 1, len, c + len), &dev)?;
                let theirs = reference(&qs, &kf, &vf, &mask, scale);
                let ours = packed.narrow(1, start, len)?;
                assert!(max_diff(&ours, &theirs) < 1e-12, "c {c}, length {len}");
                // The sequence packed alone: the same bits.
                let one =
                    qs.contiguous()?
                        .apply_op3(&ks.contiguous()?, &vs.contiguous()?, op(&[len]))?;
                alone.push(one.clone());
                assert_eq!(
                    one.flatten_all()?.to_vec1::<f64>()?,
                    ours.flatten_all()?.to_vec1::<f64>()?,
                    "c {c}, length {len}, alone"
                );
                start += len;
            }
            // In reverse order: each sequence's rows again the same bits.
            let reversed = |x: &Tensor| -> Result<Tensor> {
                let mut parts = Vec::new();
                let mut end = total;
                for &len in lengths.iter().rev() {
                    parts.push(x.narrow(2, end - len, len)?);
                    end -= len;
                }
                Tensor::cat(&parts, 2)
            };
            let rev_lengths: Vec<usize> = lengths.iter().rev().copied().collect();
            let back = reversed(&q)?.apply_op3(&reversed(&k)?, &reversed(&v)?, op(&rev_lengths))?;
            let mut at = 0;
            for (one, &len) in alone.iter().rev().zip(&rev_lengths) {
                assert_eq!(
                    back.narrow(1, at, len)?.flatten_all()?.to_vec1::<f64>()?,
                    one.flatten_all()?.to_vec1::<f64>()?
                );
                at += len;
            }
        }
        Ok(())
    }

    /// Lengths that do not cover the positions, a 0 length, and a context of another shape
    /// are errors naming what does not fit.
    #[test]
    fn packed_misfits_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 4, 5, 2), DType::F32, &dev)?;
        let k = Tensor::zeros((1, 2, 5, 2), DType::F32, &dev)?;
        let op = |lengths: Vec<usize>, context| PackedAttention {
            scale: 1.0,
            lengths,
            context,
        };
        for lengths in [vec![2, 2], vec![5, 0], vec![]] {
            let err = q.apply_op3(&k, &k, op(lengths.clone(), None)).unwrap_err();
            assert!(
                err.to_string().contains("sequence lengths"),
                "{lengths:?}: {err}"
            );
        }
        let ck = Tensor::zeros((1, 1, 3, 2), DType::F32, &dev)?;
        let err = q
            .apply_op3(&k, &k, op(vec![5], Some((ck.clone(), ck))))
            .unwrap_err()
            .to_string();
        assert!(err.contains("context keys"), "{err}");
        let q3 = Tensor::zeros((1, 3, 5, 2), DType::F32, &dev)?;
        let err = q3
            .apply_op3(&k, &k, op(vec![5], None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("3 heads for 2"), "{err}");
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
