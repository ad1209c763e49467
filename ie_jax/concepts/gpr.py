"""Gaussian-process regression with an RBF kernel, in JAX (paper §2.5).

It is scikit-learn's `GaussianProcessRegressor(kernel=RBF(length_scale), alpha=alpha,
optimizer=None, normalize_y=False)`: zero prior mean, unit signal variance, noise variance
`alpha` on the diagonal, no hyper-parameter fitting. Fitting is one Cholesky factorisation
of the observed points' kernel matrix; predictions for the whole vocabulary run in chunks
so that only `chunk_size x n_observed` kernel values exist at a time (146,347 x 10,000 in
float32 would be 5.9 GB).

The exact posterior variance is one triangular solve per chunk, n^2 flops per query (1.4e13
for 10,000 observations and 146,347 concepts): that is the whole cost. On CPU XLA hands it to
LAPACK's trsm, which wants the factor column-major; the fit therefore keeps the *upper*
factor L^T in JAX's row-major layout, which is L column-major, so no chunk copies the
n x n factor (400 MB at n = 10,000). An explicit inverse turning the solve into GEMMs was
measured and rejected: trsm already runs at GEMM speed per flop, and the GEMMs need
1.1-2x the flops (bench/policy.py, docs/DECISIONS.md).

Precision follows JAX's default dtype: float32 unless x64 is enabled (e.g. inside
`with jax.enable_x64(True):`).
"""
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np
import tqdm

_ROWS = 128  # prediction chunks are padded to a multiple of this many rows


class GprFit(NamedTuple):
  """A fitted GP: everything prediction needs."""
  x: jax.Array         # (n, d) observed inputs
  x_sq: jax.Array      # (n,) squared norms of x, computed once rather than per chunk
  chol_t: jax.Array    # (n, n) L^T, L the lower Cholesky factor of K(x, x) + alpha I
  weights: jax.Array   # (n,) (K + alpha I)^-1 y, y standardised if normalize_y
  length_scale: float
  y_mean: float = 0.0  # undo scikit-learn's normalize_y on predictions
  y_std: float = 1.0


def rbf_kernel(a: jax.Array, b: jax.Array, length_scale: float,
               b_sq: jax.Array | None = None) -> jax.Array:
  """exp(-|a_i - b_j|^2 / (2 l^2)), the standard (squared) RBF that scikit-learn's is.

  `b_sq`, if given, is `sum(b * b, axis=1)`, precomputed.
  """
  b_sq = jnp.sum(b * b, axis=1) if b_sq is None else b_sq
  sq = jnp.sum(a * a, axis=1)[:, None] + b_sq[None, :] - 2.0 * a @ b.T
  # Cancellation can make the distance of (near-)identical points slightly negative.
  return jnp.exp(-0.5 * jnp.maximum(sq, 0.0) / (length_scale * length_scale))


@jax.jit
def _factor(x, y, length_scale, alpha):
  k = rbf_kernel(x, x, length_scale) + alpha * jnp.eye(x.shape[0], dtype=x.dtype)
  chol = jnp.linalg.cholesky(k)
  weights = jax.scipy.linalg.cho_solve((chol, True), y)
  return chol.T, weights


def gpr_fit(x, y, *, length_scale: float = 1.0, alpha: float = 1e-2,
            normalize_y: bool = False) -> GprFit:
  """Fits the GP to observations `y` at inputs `x`.

  Args:
    x: (n, d) inputs (concept embeddings), n >= 1.
    y: (n,) targets (concept scores); one per input, repeated inputs already averaged.
    length_scale: RBF length scale.
    alpha: noise variance added to the kernel diagonal (also keeps the factorisation
      stable when two embeddings nearly coincide).
    normalize_y: as scikit-learn's: fit the standardised targets, so the prior mean is the
      observed mean and the prior std the observed std (instead of 0 and 1).

  Returns:
    The fit.

  Raises:
    ValueError: empty or mismatched inputs, non-finite values, or a kernel matrix that is
      not positive definite at this precision (raise `alpha`).
  """
  x = jnp.asarray(x, dtype=jnp.result_type(float))
  y = jnp.asarray(y, dtype=x.dtype)
  if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
    raise ValueError(f'Need x of shape (n, d) and y of shape (n,) with n >= 1; got '
                     f'{x.shape} and {y.shape}.')
  if not (bool(jnp.all(jnp.isfinite(x))) and bool(jnp.all(jnp.isfinite(y)))):
    raise ValueError('GPR inputs and targets must be finite.')
  y_mean, y_std = 0.0, 1.0
  if normalize_y:
    y_mean = float(jnp.mean(y))
    y_std = float(jnp.std(y)) or 1.0  # scikit-learn keeps a zero std at 1
    y = (y - y_mean) / y_std
  chol_t, weights = _factor(x, y, length_scale, alpha)
  if not bool(jnp.all(jnp.isfinite(chol_t))):
    raise ValueError(f'The kernel matrix of {x.shape[0]} points is not positive definite '
                     f'at {x.dtype} precision with alpha={alpha}; use a larger alpha.')
  return GprFit(x, jnp.sum(x * x, axis=1), chol_t, weights, length_scale, y_mean, y_std)


@jax.jit
def _predict_chunk(fit: GprFit, queries):
  k_star = rbf_kernel(queries, fit.x, fit.length_scale, fit.x_sq)  # (m, n)
  mean = k_star @ fit.weights
  # chol_t.T is a free relayout of the stored L^T into the column-major L trsm wants.
  v = jax.scipy.linalg.solve_triangular(fit.chol_t.T, k_star.T, lower=True)  # (n, m)
  # k(q, q) = 1 for the RBF kernel; rounding can push the variance below zero.
  var = jnp.maximum(1.0 - jnp.sum(v * v, axis=0), 0.0)
  return mean, jnp.sqrt(var)


def gpr_predict(fit: GprFit, queries, *, chunk_size: int = 8192
                ) -> tuple[np.ndarray, np.ndarray]:
  """Posterior mean and standard deviation at `queries`, at most `chunk_size` rows at a time.

  Args:
    fit: from `gpr_fit`.
    queries: (m, d) inputs.
    chunk_size: most rows per step; peak memory is about 3 x chunk_size x n_observed
      floats on top of the fit's n_observed^2.

  Returns:
    (mean, std), each a (m,) NumPy array.
  """
  queries = np.asarray(queries, dtype=fit.x.dtype)
  m = queries.shape[0]
  if m == 0:
    return np.zeros((0,), fit.x.dtype), np.zeros((0,), fit.x.dtype)
  # Near-equal chunks padded to one shape (one compilation), a multiple of _ROWS so that
  # vocabularies of similar sizes share it: at most _ROWS padded rows per chunk, not up to
  # a whole chunk of wasted solves.
  num_chunks = math.ceil(m / chunk_size)
  step = min(chunk_size, _ROWS * math.ceil(m / num_chunks / _ROWS))
  means, stds = [], []
  # At the paper's scale (146,347 concepts, ~10k observations: 18 chunks) each chunk takes
  # seconds; a few chunks take about a second in all and get no bar.
  for start in tqdm.trange(0, m, step, desc='GP prediction', unit='chunk', leave=False,
                           disable=num_chunks < 8):
    chunk = queries[start:start + step]
    rows = chunk.shape[0]
    if rows < step:
      chunk = np.concatenate([chunk, np.zeros((step - rows, chunk.shape[1]), chunk.dtype)])
    mean, std = _predict_chunk(fit._replace(y_mean=0.0, y_std=1.0), chunk)
    means.append(np.asarray(mean)[:rows] * fit.y_std + fit.y_mean)
    stds.append(np.asarray(std)[:rows] * fit.y_std)
  return np.concatenate(means), np.concatenate(stds)
