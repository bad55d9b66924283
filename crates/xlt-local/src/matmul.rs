//! The projections' matrix products on the CPU: `x Wᵀ` in the forward pass and `g W` in the
//! backward pass, for a weight `W` `(out, in)` that is not trained (the base model's, under
//! LoRA or at inference) ([`FrozenMatmul`]), and a LoRA-wrapped projection as one operation
//! ([`LoraMatmul`]: base product, dropout and adapter, with the adapter's gradients).
//!
//! candle 0.11 multiplies with gemm 0.19, whose kernels run the decoder's projection shapes
//! (about 120 rows, 576 by 192 to 1536 for SmolLM2-135M) at 40 to 120 GFLOP/s on the 2-core
//! AVX-512 machine of issue #12's benchmark; faer's x86 kernels (`private-gemm-x86`, which
//! picks AVX-512 or AVX2 at run time) run the same shapes at 75 to 165 GFLOP/s. f32 and f64
//! go through faer; other dtypes (bf16) and other devices through candle's own matmul.

use crate::kernels::{values, with_slice};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Storage, Tensor};
use faer::{Accum, MatMut, MatRef, Par};

/// `x Wᵀ` for a frozen `W` `(out, in)`: `x` `(rows, in)` to `(rows, out)`. Its backward pass
/// gives `x` its gradient `g W` and the weight none: candle's `matmul` would compute a
/// weight-sized gradient for the base weight too and keep it until the pass ends (the whole
/// model's size again, and one more matrix product per layer).
pub(crate) struct FrozenMatmul(pub(crate) Tensor);

/// `g W` for the backward pass of [`FrozenMatmul`]: `g` `(rows, out)` to `(rows, in)`.
/// Not differentiable itself (second derivatives are out of scope, as in candle).
struct FrozenMatmulGrad(Tensor);

/// `dst` `(rows, n)` `= alpha lhs rhs`, or `+=` with `add`, all row-major: `lhs` is
/// `(rows, k)`, or `(k, rows)` when its flag is set (then used transposed); `rhs` is `(k, n)`,
/// or `(n, k)` when its flag is set.
pub(crate) fn gemm<T: faer::traits::ComplexField + Copy>(
    dst: &mut [T],
    (lhs, lhs_t): (&[T], bool),
    (rhs, rhs_t): (&[T], bool),
    (rows, k, n): (usize, usize, usize),
    alpha: T,
    add: bool,
    par: Par,
) {
    let (dst, a, b) = operands(dst, (lhs, lhs_t), (rhs, rhs_t), (rows, k, n));
    let beta = if add { Accum::Add } else { Accum::Replace };
    faer::linalg::matmul::matmul(dst, beta, a, b, alpha, par);
}

/// [`gemm`]'s row-major slices as faer views: `dst` `(rows, n)`, `lhs` `(rows, k)` and `rhs`
/// `(k, n)`, transposed views where a flag is set.
#[allow(clippy::type_complexity)]
fn operands<'a, T: faer::traits::ComplexField>(
    dst: &'a mut [T],
    (lhs, lhs_t): (&'a [T], bool),
    (rhs, rhs_t): (&'a [T], bool),
    (rows, k, n): (usize, usize, usize),
) -> (MatMut<'a, T>, MatRef<'a, T>, MatRef<'a, T>) {
    let a = if lhs_t {
        MatRef::from_row_major_slice(lhs, k, rows).transpose()
    } else {
        MatRef::from_row_major_slice(lhs, rows, k)
    };
    let b = if rhs_t {
        MatRef::from_row_major_slice(rhs, n, k).transpose()
    } else {
        MatRef::from_row_major_slice(rhs, k, n)
    };
    (MatMut::from_row_major_slice_mut(dst, rows, n), a, b)
}

/// The contiguous slice of a CPU tensor's storage, or `None` (strided, or another dtype).
fn slice<'a, T: candle_core::WithDType>(s: &'a CpuStorage, l: &Layout) -> Option<&'a [T]> {
    crate::kernels::contiguous("", s, l).ok()
}

/// `x` `(rows, k)` times the weight, transposed (`x Wᵀ`, `W` `(n, k)`) or not (`x W`, `W`
/// `(k, n)`): faer for f32 and f64 with both operands contiguous, candle's matmul otherwise.
fn product(
    name: &str,
    weight: &Tensor,
    transposed: bool,
    x: &CpuStorage,
    x_layout: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (rows, k) = x_layout.shape().dims2()?;
    let (w0, w1) = weight.dims2()?;
    let (wk, n) = if transposed { (w1, w0) } else { (w0, w1) };
    if k != wk {
        candle_core::bail!(
            "{name}: x is ({rows}, {k}), the weight ({w0}, {w1}){}",
            if transposed { ", transposed" } else { "" }
        );
    }
    let (storage, w_layout) = weight.storage_and_layout();
    let Storage::Cpu(w) = &*storage else {
        candle_core::bail!("{name}: the weight is not on the CPU");
    };
    fn faer<T: GemmFloat>(a: &[T], b: &[T], dims: (usize, usize, usize), t: bool) -> Vec<T> {
        let mut y = vec![T::default(); dims.0 * dims.2];
        mm(&mut y, (a, false), (b, t), dims, T::from_f64(1.0), false);
        y
    }
    let dims = (rows, k, n);
    if let (Some(a), Some(b)) = (slice::<f32>(x, x_layout), slice::<f32>(w, w_layout)) {
        return Ok((
            CpuStorage::F32(faer(a, b, dims, transposed)),
            (rows, n).into(),
        ));
    }
    if let (Some(a), Some(b)) = (slice::<f64>(x, x_layout), slice::<f64>(w, w_layout)) {
        return Ok((
            CpuStorage::F64(faer(a, b, dims, transposed)),
            (rows, n).into(),
        ));
    }
    let rhs_layout = if transposed {
        w_layout.transpose(0, 1)?
    } else {
        w_layout.clone()
    };
    let y = x.matmul(w, (1, rows, n, k), x_layout, &rhs_layout)?;
    Ok((y, (rows, n).into()))
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, x_layout: &Layout) -> Result<(CpuStorage, Shape)> {
        product(self.name(), &self.0, true, x, x_layout)
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad_y: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            grad_y
                .contiguous()?
                .apply_op1_no_bwd(&FrozenMatmulGrad(self.0.clone()))?,
        ))
    }
}

impl CustomOp1 for FrozenMatmulGrad {
    fn name(&self) -> &'static str {
        "frozen-matmul-grad"
    }

    fn cpu_fwd(&self, g: &CpuStorage, g_layout: &Layout) -> Result<(CpuStorage, Shape)> {
        product(self.name(), &self.0, false, g, g_layout)
    }
}

/// A LoRA-wrapped frozen projection in one operation, PEFT's `lora.Linear` without bias:
/// `y = x Wᵀ + scale (dropout(x) Aᵀ) Bᵀ` for `x` `(rows, in)`, a frozen `W` `(out, in)`, the
/// trainable `A` `(r, in)` and `B` `(out, r)`; `y` is `(rows, out)`.
///
/// The dropout mask is a function of the seed and each element's index ([`keeps`]), so the
/// same seed gives the same mask on any number of threads, and the backward pass draws it
/// again instead of keeping it. The backward pass keeps nothing but `x`: with `m` the mask,
/// `xm = x ⊙ m`, `h = xm Aᵀ`, `gB = g B`: `dx = g W + scale (gB A) ⊙ m`,
/// `dA = scale gBᵀ xm`, `dB = scale gᵀ h`.
pub(crate) struct LoraMatmul {
    pub(crate) weight: Tensor,
    pub(crate) scale: f64,
    /// The dropout probability and this call's mask seed; `None`: no dropout (evaluation).
    pub(crate) dropout: Option<(f64, u64)>,
}

/// Elements per task when a mask is applied in parallel.
const MASK_CHUNK: usize = 1 << 14;

/// Whether element `i` of the mask of `seed` is kept: MurmurHash3's 32-bit finalizer
/// (`fmix32`, Appleby) of the element's index keyed by the seed, compared with
/// `threshold = (1 - p) 2³²`: a counter-based draw, as PyTorch's Philox dropout is. Each
/// element's draw depends on nothing but the seed and its index, so the loop vectorizes
/// (32-bit products only) and any split of it gives the same mask.
#[inline(always)]
fn keeps(key: u32, i: u32, threshold: u32) -> bool {
    let mut h = i.wrapping_mul(0x9e37_79b9) ^ key;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h < threshold
}

/// Multiplies `buf` by the dropout mask of `seed`: each element kept with probability
/// `1 - p` and scaled by `1 / (1 - p)`, or zeroed. (A buffer of 2³² elements or more would
/// repeat its mask; a projection's input is far smaller.)
fn apply_mask<T: crate::kernels::Float>(buf: &mut [T], p: f64, seed: u64) {
    use rayon::prelude::*;
    let keep = 1.0 - p;
    let threshold = (keep * 4_294_967_296.0).min(4_294_967_295.0) as u32;
    // Both halves of the seed count: fold them into the key, then mix it once.
    let key = {
        let mut k = (seed ^ (seed >> 32)) as u32;
        k = (k ^ (k >> 16)).wrapping_mul(0x7feb_352d);
        k ^ (k >> 15)
    };
    let inv = T::from_f64(1.0 / keep);
    buf.par_chunks_mut(MASK_CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let start = (c * MASK_CHUNK) as u32;
            crate::kernels::vectorized(|| {
                for (j, x) in chunk.iter_mut().enumerate() {
                    let kept = keeps(key, start.wrapping_add(j as u32), threshold);
                    *x = if kept { *x * inv } else { T::default() };
                }
            });
        });
}

/// [`gemm`] across the thread pool, in one block of `dst` a thread, each block's product
/// single-threaded on its thread (faer's sequential kernel over the whole inner dimension):
/// blocks of rows where each thread gets at least [`MIN_BLOCK_ROWS`] of them (a packed batch),
/// otherwise blocks of columns where each gets at least [`MIN_BLOCK_COLS`] (a prompt or a
/// decoding step); faer's own parallel split for narrower products and for an inner
/// dimension under [`MIN_BLOCK_INNER`].
///
/// On the 2-core Intel Xeon of issue #27 this ran the decoder's projection shapes (20 to 700
/// rows, `576 x 192` to `1536 x 576`) up to 1.8x as fast as faer's parallel product, 1.3x
/// at a question's 85 rows (`bench_local --products`, `docs/BENCHMARKS.md`), with the same
/// bits: each output element is the same sequential dot product over `k` either way, so a
/// row's result still depends neither on the other rows nor on the thread count
/// (`tests::blocks_give_faers_bits`).
pub(crate) fn mm<T: GemmFloat>(
    dst: &mut [T],
    lhs: (&[T], bool),
    rhs: (&[T], bool),
    dims: (usize, usize, usize),
    alpha: T,
    add: bool,
) {
    let threads = rayon::current_num_threads();
    let (rows, k, n) = dims;
    let by = if threads < 2 || k < MIN_BLOCK_INNER {
        None
    } else if rows >= threads * MIN_BLOCK_ROWS {
        Some(Cut::Rows)
    } else if n >= threads * MIN_BLOCK_COLS {
        Some(Cut::Cols)
    } else {
        None
    };
    let Some(by) = by else {
        return gemm(dst, lhs, rhs, dims, alpha, add, Par::rayon(0));
    };
    let (dst, a, b) = operands(dst, lhs, rhs, dims);
    let beta = if add { Accum::Add } else { Accum::Replace };
    let parts = match by {
        Cut::Rows => threads,
        Cut::Cols => threads * (n / (threads * COL_BLOCK)).max(1),
    };
    by_blocks(dst, beta, a, b, alpha, parts, by);
}

/// The fewest rows a thread takes in [`mm`]'s row blocks (a packed batch): on issue #27's
/// machine, at 350 rows a thread, row blocks ran the narrow `576 x 192` product about 1.1x as
/// fast as column blocks and the others alike; at 150 rows a thread, column blocks ran every
/// shape faster. Narrow products (a LoRA rank) with many rows take row blocks too.
const MIN_BLOCK_ROWS: usize = 200;

/// The shortest inner dimension [`mm`] cuts into blocks (a LoRA adapter's `B` product, whose
/// inner dimension is the rank, takes faer's own split): a block then always has more than
/// faer's 16³ multiply-adds, below which faer takes another kernel (`nano-gemm`), or a
/// single row, which takes faer's matrix-vector kernel whole or in blocks alike.
const MIN_BLOCK_INNER: usize = 64;

/// The fewest output columns a thread takes in [`mm`]'s column blocks.
const MIN_BLOCK_COLS: usize = 64;

/// About the width of a column block where there are enough columns for several a thread
/// (blocks of 96 to 191 columns, a multiple of the threads in number, which the pool's work
/// stealing balances): on issue #27's machine, 1536 columns ran up to 1.3x as fast in 16
/// blocks as in 2, 576 up to 1.1x in 6, where a block's weights (`in x 96` f32) stay in the
/// core's cache while the rows go by.
const COL_BLOCK: usize = 96;

/// How [`by_blocks`] cuts `dst`.
#[derive(Clone, Copy)]
enum Cut {
    /// `dst` and `a` by rows.
    Rows,
    /// `dst` and `b` by columns, edges on multiples of 16 (an AVX-512 register of f32).
    Cols,
}

/// `dst = beta dst + alpha a b` in `parts` blocks cut `by` rows or columns, one a rayon task,
/// each block single-threaded.
fn by_blocks<T: GemmFloat>(
    dst: MatMut<'_, T>,
    beta: Accum,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    alpha: T,
    parts: usize,
    by: Cut,
) {
    let len = match by {
        Cut::Rows => dst.nrows(),
        Cut::Cols => dst.ncols(),
    };
    if parts <= 1 || len <= 16 {
        faer::linalg::matmul::matmul(dst, beta, a, b, alpha, Par::Seq);
        return;
    }
    let left = parts / 2;
    let at = len * left / parts;
    let ((d0, d1), (a0, a1), (b0, b1)) = match by {
        Cut::Rows => (dst.split_at_row_mut(at), a.split_at_row(at), (b, b)),
        Cut::Cols => {
            let at = at.next_multiple_of(16).min(len);
            (dst.split_at_col_mut(at), (a, a), b.split_at_col(at))
        }
    };
    rayon::join(
        || by_blocks(d0, beta, a0, b0, alpha, left, by),
        || by_blocks(d1, beta, a1, b1, alpha, parts - left, by),
    );
}

/// A float the products here compute in: f32 or f64, with faer's kernels.
pub(crate) trait GemmFloat:
    crate::kernels::Float + faer::traits::ComplexField + Copy
{
}
impl<T: crate::kernels::Float + faer::traits::ComplexField + Copy> GemmFloat for T {}

/// Shapes of a LoRA product: rows, in, out, rank.
#[derive(Clone, Copy)]
struct LoraDims {
    rows: usize,
    inp: usize,
    out: usize,
    r: usize,
}

impl LoraMatmul {
    fn dims(&self, x: &Shape, a: &Shape, b: &Shape) -> Result<LoraDims> {
        let (rows, inp) = x.dims2()?;
        let (out, w_in) = self.weight.dims2()?;
        let (r, a_in) = a.dims2()?;
        let (b_out, b_r) = b.dims2()?;
        if w_in != inp || a_in != inp || b_out != out || b_r != r {
            candle_core::bail!(
                "lora-matmul: x ({rows}, {inp}), weight ({out}, {w_in}), lora_A ({r}, {a_in}), lora_B ({b_out}, {b_r}) do not fit"
            );
        }
        Ok(LoraDims { rows, inp, out, r })
    }

    /// `x` with the dropout mask applied (a copy), or `x` itself.
    fn masked<'a, T: GemmFloat>(&self, x: &'a [T]) -> std::borrow::Cow<'a, [T]> {
        match self.dropout {
            Some((p, seed)) if p > 0.0 => {
                let mut xm = x.to_vec();
                apply_mask(&mut xm, p, seed);
                std::borrow::Cow::Owned(xm)
            }
            _ => std::borrow::Cow::Borrowed(x),
        }
    }

    /// The adapter's input and its projection: `xm = dropout(x)` (or `x`) and `h = xm Aᵀ`
    /// `(rows, r)`; the backward pass computes them again rather than keep them.
    fn low_rank<'a, T: GemmFloat>(
        &self,
        x: &'a [T],
        a: &[T],
        d: LoraDims,
    ) -> (std::borrow::Cow<'a, [T]>, Vec<T>) {
        let xm = self.masked(x);
        let mut h = vec![T::default(); d.rows * d.r];
        let one = T::from_f64(1.0);
        mm(
            &mut h,
            (&xm, false),
            (a, true),
            (d.rows, d.inp, d.r),
            one,
            false,
        );
        (xm, h)
    }

    fn forward<T: GemmFloat>(&self, x: &[T], a: &[T], b: &[T], d: LoraDims) -> Result<Vec<T>> {
        let one = T::from_f64(1.0);
        let mut y = vec![T::default(); d.rows * d.out];
        with_slice::<T, _>("lora-matmul weight", &self.weight, |w| {
            mm(
                &mut y,
                (x, false),
                (w, true),
                (d.rows, d.inp, d.out),
                one,
                false,
            );
        })?;
        let (_, h) = self.low_rank(x, a, d);
        let scale = T::from_f64(self.scale);
        mm(
            &mut y,
            (&h, false),
            (b, true),
            (d.rows, d.r, d.out),
            scale,
            true,
        );
        Ok(y)
    }

    /// `[dx, dA, dB]`, flattened and concatenated.
    fn backward<T: GemmFloat>(
        &self,
        x: &[T],
        g: &[T],
        (a, b): (&[T], &[T]),
        d: LoraDims,
    ) -> Result<Vec<T>> {
        let (one, scale) = (T::from_f64(1.0), T::from_f64(self.scale));
        let (xm, h) = self.low_rank(x, a, d);
        let mut gb = vec![T::default(); d.rows * d.r];
        mm(
            &mut gb,
            (g, false),
            (b, false),
            (d.rows, d.out, d.r),
            one,
            false,
        );
        // dx = g W + scale (gB A) ⊙ m
        let mut dx = vec![T::default(); d.rows * d.inp];
        mm(
            &mut dx,
            (&gb, false),
            (a, false),
            (d.rows, d.r, d.inp),
            scale,
            false,
        );
        if let Some((p, seed)) = self.dropout.filter(|(p, _)| *p > 0.0) {
            apply_mask(&mut dx, p, seed);
        }
        with_slice::<T, _>("lora-matmul weight", &self.weight, |w| {
            mm(
                &mut dx,
                (g, false),
                (w, false),
                (d.rows, d.out, d.inp),
                one,
                true,
            );
        })?;
        // dA = scale gBᵀ xm  (r, in);  dB = scale gᵀ h  (out, r)
        let mut da = vec![T::default(); d.r * d.inp];
        mm(
            &mut da,
            (&gb, true),
            (&xm, false),
            (d.r, d.rows, d.inp),
            scale,
            false,
        );
        let mut db = vec![T::default(); d.out * d.r];
        mm(
            &mut db,
            (g, true),
            (&h, false),
            (d.out, d.rows, d.r),
            scale,
            false,
        );
        dx.extend_from_slice(&da);
        dx.extend_from_slice(&db);
        Ok(dx)
    }
}

impl candle_core::CustomOp3 for LoraMatmul {
    fn name(&self) -> &'static str {
        "lora-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        use crate::kernels::contiguous as c;
        let d = self.dims(xl.shape(), al.shape(), bl.shape())?;
        let y = crate::kernels::by_dtype!("lora-matmul", x, |T| self.forward::<T>(
            c("lora-matmul x", x, xl)?,
            c("lora_A", a, al)?,
            c("lora_B", b, bl)?,
            d,
        )?);
        Ok((y, (d.rows, d.out).into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = self.dims(x.shape(), a.shape(), b.shape())?;
        let all = x.contiguous()?.apply_op2_no_bwd(
            &g.contiguous()?,
            &LoraMatmulGrad {
                forward: LoraMatmul {
                    weight: self.weight.clone(),
                    scale: self.scale,
                    dropout: self.dropout,
                },
                a: a.clone(),
                b: b.clone(),
            },
        )?;
        let (nx, na) = (d.rows * d.inp, d.r * d.inp);
        Ok((
            Some(all.narrow(0, 0, nx)?.reshape(x.shape())?),
            Some(all.narrow(0, nx, na)?.reshape(a.shape())?),
            Some(all.narrow(0, nx + na, d.out * d.r)?.reshape(b.shape())?),
        ))
    }
}

/// The gradients of [`LoraMatmul`] from `(x, g)`: `[dx, dA, dB]` flattened and concatenated.
struct LoraMatmulGrad {
    forward: LoraMatmul,
    a: Tensor,
    b: Tensor,
}

impl CustomOp2 for LoraMatmulGrad {
    fn name(&self) -> &'static str {
        "lora-matmul-grad"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        use crate::kernels::contiguous as c;
        let d = self
            .forward
            .dims(xl.shape(), self.a.shape(), self.b.shape())?;
        let n = d.rows * d.inp + d.r * d.inp + d.out * d.r;
        let out =
            crate::kernels::by_dtype!("lora-matmul-grad", x, |T| self.forward.backward::<T>(
                c("lora-matmul x", x, xl)?,
                c("lora-matmul gradient", g, gl)?,
                (&values(&self.a)?, &values(&self.b)?),
                d,
            )?);
        Ok((out, Shape::from(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::max_diff;
    use candle_core::{DType, Device};

    /// faer's product equals candle's to float precision, forward and backward, in f32 and
    /// f64, also for a weight that is a view at an offset.
    #[test]
    fn frozen_matmul_matches_candle_forward_and_backward() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let big = Tensor::randn(0f32, 1.0, (9, 7), &dev)?.to_dtype(dtype)?;
            let w = big.narrow(0, 2, 5)?; // (5, 7), offset 14
            let x = candle_core::Var::from_tensor(
                &Tensor::randn(0f32, 1.0, (4, 7), &dev)?.to_dtype(dtype)?,
            )?;
            let ours = x.apply_op1(FrozenMatmul(w.clone()))?;
            let theirs = x.matmul(&w.t()?)?;
            let diff = (&ours - &theirs)?.abs()?.max_all()?.to_dtype(DType::F64)?;
            assert!(diff.to_scalar::<f64>()? < 1e-5, "{dtype:?} forward: {diff}");
            let g = Tensor::randn(0f32, 1.0, (4, 5), &dev)?.to_dtype(dtype)?;
            let ours = (ours * &g)?.sum_all()?.backward()?;
            let theirs = (theirs * &g)?.sum_all()?.backward()?;
            let (a, b) = (ours.get(&x).unwrap(), theirs.get(&x).unwrap());
            let diff = (a - b)?.abs()?.max_all()?.to_dtype(DType::F64)?;
            assert!(
                diff.to_scalar::<f64>()? < 1e-5,
                "{dtype:?} backward: {diff}"
            );
            assert_eq!(a.dims(), &[4, 7]);
        }
        Ok(())
    }

    /// [`mm`]'s blocks, of columns or (from 600 rows on 3 threads, 400 on 2) of rows, give
    /// faer's bits, sequential or parallel, for one row, a few and many, with either operand
    /// transposed, on pools of 2 and 3 threads: a row's result does not depend on the split.
    #[test]
    fn blocks_give_faers_bits() {
        let value = |i: usize, m: usize| ((i * 7919 % m) as f32 - m as f32 / 2.0) * 1e-3;
        for threads in [2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for (rows, k, n) in [
                (1, 64, 200),
                (2, 576, 192),
                (85, 576, 576),
                (37, 96, 1000),
                (450, 576, 192),
                (601, 96, 40),
                (3, 16, 576),
            ] {
                for (lhs_t, rhs_t, add) in [(false, true, false), (true, false, true)] {
                    let lhs: Vec<f32> = (0..rows * k).map(|i| value(i, 1013)).collect();
                    let rhs: Vec<f32> = (0..k * n).map(|i| value(i, 997)).collect();
                    let start: Vec<f32> = (0..rows * n).map(|i| value(i, 89)).collect();
                    let run = |f: &(dyn Fn(&mut [f32]) + Sync)| {
                        let mut dst = start.clone();
                        pool.install(|| f(&mut dst));
                        dst
                    };
                    let (l, r, dims) = ((&lhs[..], lhs_t), (&rhs[..], rhs_t), (rows, k, n));
                    let blocks = run(&|d| mm(d, l, r, dims, 0.5, add));
                    for par in [Par::Seq, Par::rayon(0)] {
                        let faer = run(&|d| gemm(d, l, r, dims, 0.5, add, par));
                        let same = blocks
                            .iter()
                            .zip(&faer)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(
                            same,
                            "{threads} threads, {dims:?}, {par:?}, t {lhs_t}/{rhs_t}"
                        );
                    }
                }
            }
        }
    }

    /// Without dropout, the fused LoRA product and its gradients for `x`, `A` and `B` equal
    /// candle's composition `x Wᵀ + scale x Aᵀ Bᵀ`.
    #[test]
    fn lora_matmul_matches_candles_composition() -> Result<()> {
        let dev = Device::Cpu;
        let var = |shape: (usize, usize)| -> Result<candle_core::Var> {
            candle_core::Var::from_tensor(&Tensor::randn(0f64, 1.0, shape, &dev)?)
        };
        let (x, a, b) = (var((6, 5))?, var((2, 5))?, var((4, 2))?);
        let w = Tensor::randn(0f64, 1.0, (4, 5), &dev)?;
        let ours = x.apply_op3(
            a.as_tensor(),
            b.as_tensor(),
            LoraMatmul {
                weight: w.clone(),
                scale: 1.5,
                dropout: None,
            },
        )?;
        let theirs = (x.matmul(&w.t()?)? + (x.matmul(&a.t()?)?.matmul(&b.t()?)? * 1.5)?)?;
        assert!(max_diff(&ours, &theirs) < 1e-12);
        let g = Tensor::randn(0f64, 1.0, (6, 4), &dev)?;
        let go = (ours * &g)?.sum_all()?.backward()?;
        let gt = (theirs * &g)?.sum_all()?.backward()?;
        for v in [&x, &a, &b] {
            let (o, t) = (
                go.get(v.as_tensor()).unwrap(),
                gt.get(v.as_tensor()).unwrap(),
            );
            assert_eq!(o.dims(), v.dims());
            assert!(max_diff(o, t) < 1e-12);
        }
        Ok(())
    }

    /// With dropout, the mask follows from the seed alone (the backward pass draws it
    /// again), about `p` of the elements are dropped, and the gradients of `x`, `A` and `B`
    /// match central finite differences in f64.
    #[test]
    fn lora_matmul_with_dropout_has_the_gradients_of_its_function() -> Result<()> {
        let dev = Device::Cpu;
        let mut ones = vec![1f64; 3 * MASK_CHUNK + 17];
        apply_mask(&mut ones, 0.25, 7);
        let mut again = vec![1f64; 3 * MASK_CHUNK + 17];
        apply_mask(&mut again, 0.25, 7);
        assert_eq!(ones, again);
        let dropped = ones.iter().filter(|&&v| v == 0.0).count() as f64 / ones.len() as f64;
        assert!((dropped - 0.25).abs() < 0.02, "dropped {dropped}");
        assert!(
            ones.iter()
                .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-12)
        );

        let op = || LoraMatmul {
            weight: (Tensor::arange(0f64, 12.0, &dev)
                .unwrap()
                .reshape((3, 4))
                .unwrap()
                * 0.1)
                .unwrap(),
            scale: 2.0,
            dropout: Some((0.3, 11)),
        };
        let w = op().weight;
        let mk = |shape: (usize, usize), seed: f64| -> Result<Vec<f64>> {
            let n = shape.0 * shape.1;
            Ok((0..n).map(|i| ((i as f64 + seed) * 0.7).sin()).collect())
        };
        let (xv, av, bv) = (mk((5, 4), 1.0)?, mk((2, 4), 2.0)?, mk((3, 2), 3.0)?);
        let g: Vec<f64> = (0..15).map(|i| ((i as f64) * 0.37).cos()).collect();
        let loss = |xv: &[f64], av: &[f64], bv: &[f64]| -> Result<f64> {
            let x = Tensor::from_slice(xv, (5, 4), &dev)?;
            let a = Tensor::from_slice(av, (2, 4), &dev)?;
            let b = Tensor::from_slice(bv, (3, 2), &dev)?;
            let o = LoraMatmul {
                weight: w.clone(),
                ..op()
            };
            let y = x.apply_op3(&a, &b, o)?;
            (y * Tensor::from_slice(&g, (5, 3), &dev)?)?
                .sum_all()?
                .to_scalar::<f64>()
        };
        let x = candle_core::Var::from_slice(&xv, (5, 4), &dev)?;
        let a = candle_core::Var::from_slice(&av, (2, 4), &dev)?;
        let b = candle_core::Var::from_slice(&bv, (3, 2), &dev)?;
        let y = x.apply_op3(
            a.as_tensor(),
            b.as_tensor(),
            LoraMatmul {
                weight: w.clone(),
                ..op()
            },
        )?;
        let grads = (y * Tensor::from_slice(&g, (5, 3), &dev)?)?
            .sum_all()?
            .backward()?;
        let h = 1e-6;
        for (which, var) in [(0, &x), (1, &a), (2, &b)] {
            let analytic = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()?
                .to_vec1::<f64>()?;
            let base = [xv.clone(), av.clone(), bv.clone()];
            for i in 0..base[which].len() {
                let (mut plus, mut minus) = (base.clone(), base.clone());
                plus[which][i] += h;
                minus[which][i] -= h;
                let fd = (loss(&plus[0], &plus[1], &plus[2])?
                    - loss(&minus[0], &minus[1], &minus[2])?)
                    / (2.0 * h);
                assert!(
                    (fd - analytic[i]).abs() < 1e-6,
                    "input {which}, element {i}: finite difference {fd}, backward {}",
                    analytic[i]
                );
            }
        }
        Ok(())
    }

    /// A shape mismatch is an error naming both shapes, not a panic.
    #[test]
    fn mismatched_shapes_are_an_error() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::zeros((5, 7), DType::F32, &dev)?;
        let x = Tensor::zeros((4, 6), DType::F32, &dev)?;
        let err = x.apply_op1(FrozenMatmul(w)).unwrap_err().to_string();
        assert!(err.contains("(4, 6)") && err.contains("(5, 7)"), "{err}");
        Ok(())
    }
}
