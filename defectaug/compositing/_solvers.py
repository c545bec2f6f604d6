"""Exact, batched, differentiable solvers for the discrete Poisson equations of the blends.

* ``solve_dirichlet_rectangle``: the 5-point Laplacian on a rectangle with zero Dirichlet border,
  diagonalised by the orthonormal DST-I (its own inverse), applied as products with cached DST
  matrices; on CPU, rectangles over ``MATMUL_DST_MAX`` px a side use ``scipy.fft.dstn``
  (pocketfft) instead, whose ``O(n log n)`` wins there.
* ``solve_band``: the 5-point Laplacian restricted to an arbitrary set of pixels (the band of the
  improved blend, a sparse CSR matrix), by batched conjugate gradients to a residual tolerance.

Both operators are symmetric, so each backward pass is the same solve applied to the incoming
gradient (implicit differentiation), wrapped in ``torch.autograd.Function``.
"""

from __future__ import annotations

import bisect
import math
import warnings
from functools import lru_cache

import numpy as np
import scipy.fft
import torch
from torch.autograd.function import once_differentiable


def _five_smooth_numbers(limit: int) -> list[int]:
    values = []
    power2 = 1
    while power2 <= limit:
        power3 = power2
        while power3 <= limit:
            power5 = power3
            while power5 <= limit:
                values.append(power5)
                power5 *= 5
            power3 *= 3
        power2 *= 2
    return sorted(values)


_FIVE_SMOOTH = _five_smooth_numbers(1 << 20)


def dst_friendly_length(length: int, limit: int) -> int:
    """Smallest ``n >= length``, ``n <= limit``, whose DST-I is fast (``n + 1`` is 5-smooth).

    The DST-I of size ``n`` is an FFT of size ``2 (n + 1)``; a large prime factor there costs up to
    3x (measured: n=255 1.6 ms, n=257 4.5 ms per RGB image). Returns ``length`` itself when no such
    ``n`` fits under ``limit``.
    """
    candidate = _FIVE_SMOOTH[bisect.bisect_left(_FIVE_SMOOTH, length + 1)] - 1
    return candidate if candidate <= limit else length


@lru_cache(maxsize=128)
def _inverse_eigenvalues_numpy(rows: int, cols: int, dtype: np.dtype) -> np.ndarray:
    return _inverse_eigenvalues_float64(rows, cols).astype(dtype)


def _inverse_eigenvalues_float64(rows: int, cols: int) -> np.ndarray:
    """``1 / lambda_kl`` of the Dirichlet 5-point Laplacian on a ``rows x cols`` interior
    (float64): from cached per-axis eigenvalues, the per-sample renderer's many rectangle shapes
    cost two numpy operations each, not a dozen torch ones."""
    return -1.0 / (_laplacian_eigenvalues(rows)[:, None] + _laplacian_eigenvalues(cols))


@lru_cache(maxsize=1024)
def _laplacian_eigenvalues(size: int) -> np.ndarray:
    """``4 sin^2(k pi / (2 (size + 1)))``, k = 1..size: the 1-D Dirichlet Laplacian's
    eigenvalues (float64)."""
    index = torch.arange(1, size + 1, dtype=torch.float64)
    return (4.0 * torch.sin(index * math.pi / (2 * (size + 1))) ** 2).numpy()


@lru_cache(maxsize=128)
def _inverse_eigenvalues_tensor(
    rows: int, cols: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    return torch.from_numpy(_inverse_eigenvalues_float64(rows, cols)).to(device=device, dtype=dtype)


@lru_cache(maxsize=128)
def _dst_matrix(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Orthonormal DST-I matrix (symmetric and its own inverse)."""
    index = torch.arange(1, size + 1, dtype=torch.float64)
    matrix = torch.sin(math.pi * index[:, None] * index[None, :] / (size + 1))
    return (matrix * math.sqrt(2.0 / (size + 1))).to(device=device, dtype=dtype)


def _dirichlet_solve_scipy(rhs: torch.Tensor) -> torch.Tensor:
    rows, cols = rhs.shape[-2:]
    array = rhs.detach().numpy()
    workers = max(torch.get_num_threads(), 1)
    spectrum = scipy.fft.dstn(array, type=1, axes=(-2, -1), norm="ortho", workers=workers)
    spectrum *= _inverse_eigenvalues_numpy(rows, cols, spectrum.dtype)
    solution = scipy.fft.dstn(
        spectrum, type=1, axes=(-2, -1), norm="ortho", workers=workers, overwrite_x=True
    )
    return torch.from_numpy(solution)


def _dirichlet_solve_torch(rhs: torch.Tensor) -> torch.Tensor:
    rows, cols = rhs.shape[-2:]
    left = _dst_matrix(rows, rhs.dtype, rhs.device)
    right = _dst_matrix(cols, rhs.dtype, rhs.device)
    spectrum = left @ rhs @ right
    spectrum = spectrum * _inverse_eigenvalues_tensor(rows, cols, rhs.dtype, rhs.device)
    return left @ spectrum @ right


#: Largest side solved by DST matrix products on CPU. Measured on 2 cores (RGB, batch 1 / 32):
#: side 63 takes 0.07 / 1.0 ms by products against 0.29 / 1.9 ms by pocketfft, side 127 takes
#: 0.22 / 6.1 against 0.44 / 6.3, and side 159 takes 0.40 / 33 against 0.59 / 10.
MATMUL_DST_MAX = 128


def _dirichlet_solve(rhs: torch.Tensor) -> torch.Tensor:
    if rhs.device.type == "cpu" and max(rhs.shape[-2:]) > MATMUL_DST_MAX:
        return _dirichlet_solve_scipy(rhs)
    return _dirichlet_solve_torch(rhs)


class _DirichletSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rhs: torch.Tensor) -> torch.Tensor:
        return _dirichlet_solve(rhs)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _dirichlet_solve(grad.contiguous())


def solve_dirichlet_rectangle(rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``Laplacian(w) = rhs`` on ``[..., n, m]`` interiors with ``w = 0`` on their border.

    ``Laplacian`` is the 5-point stencil ``sum_q (w_q - w_p)`` over the 4 neighbours; the solve is
    exact up to floating-point rounding (two DSTs and a diagonal scaling).
    """
    return _DirichletSolve.apply(rhs.contiguous())


# --------------------------------------------------------------------------------------------
# Conjugate gradients on a pixel subset.


def band_laplacian_matrix(
    neighbours: torch.Tensor, degree: torch.Tensor, channels: int
) -> torch.Tensor:
    """Sparse CSR matrix of the masked 5-point Laplacian of ``G`` independent pixel sets.

    ``neighbours [G, K, 4]`` holds, per unknown and direction, the neighbour's slot (``< K``) or
    ``K`` when that neighbour is not an unknown (known values go to the right-hand side);
    ``degree [G, K]`` counts the neighbours that exist. The matrix acts on vectors laid out as
    ``[G, C, K]`` (each channel is its own system, the layout that keeps the CG updates
    contiguous): row ``(g * C + c) * K + k`` reads ``degree * x_k - sum of unknown neighbours``.
    Missing neighbours point at four zero columns past the end (one per direction), so every row
    has five distinct, sorted columns.
    """
    groups, size, _ = neighbours.shape
    systems = groups * channels
    count = systems * size
    device = neighbours.device
    exists = (neighbours < size)[:, None].expand(groups, channels, size, 4)
    system_base = (torch.arange(systems, device=device) * size).view(groups, channels, 1, 1)
    spare = count + torch.arange(4, device=device)
    columns = torch.cat(
        [
            torch.arange(count, device=device).view(groups, channels, size, 1),
            torch.where(exists, neighbours[:, None] + system_base, spare),
        ],
        dim=3,
    ).view(count, 5)
    values = torch.cat(
        [
            degree[:, None, :, None].expand(groups, channels, size, 1),
            -exists.to(degree.dtype),
        ],
        dim=3,
    ).view(count, 5)
    columns, order = columns.sort(dim=1)
    values = values.gather(1, order)
    # int32 indices: the CPU kernel would otherwise convert int64 ones on every product.
    index_dtype = torch.int32 if 5 * count < 2**31 else torch.int64
    rows = torch.arange(0, 5 * count + 1, 5, device=device, dtype=index_dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            rows, columns.reshape(-1).to(index_dtype), values.reshape(-1), (count, count + 4)
        )


def _relative_tolerance(dtype: torch.dtype) -> float:
    return 1e-12 if dtype == torch.float64 else 1e-6


def _conjugate_gradient(
    matrix: torch.Tensor, rhs: torch.Tensor, start: torch.Tensor
) -> torch.Tensor:
    """Batched CG on ``rhs [G, C, K]``: one SPD system per ``(item, channel)``.

    Stops when every system's residual norm is below ``rtol * ||rhs||`` (``rtol`` 1e-6 in
    float32, 1e-12 in float64). A system with a zero right-hand side has the exact solution 0.
    """
    count = rhs.numel()

    def apply(padded: torch.Tensor) -> torch.Tensor:
        return (matrix @ padded).view(rhs.shape)

    rhs_norm2 = torch.linalg.vecdot(rhs, rhs)
    solution = torch.where(rhs_norm2[..., None] > 0, start, 0.0)
    # The search direction lives in a buffer with the matrix's four zero entries appended.
    padded_direction = rhs.new_zeros(count + 4)
    direction = padded_direction[:count].view(rhs.shape)
    direction.copy_(solution)
    residual = rhs - apply(padded_direction)
    direction.copy_(residual)
    residual_norm2 = torch.linalg.vecdot(residual, residual)
    threshold = _relative_tolerance(rhs.dtype) ** 2 * rhs_norm2
    # A converged system has a zero residual and direction: clamping the denominators keeps its
    # steps at exactly 0 instead of 0/0.
    tiny = torch.finfo(rhs.dtype).tiny
    # In exact arithmetic CG ends within K steps; rounding can add a few.
    for _ in range(2 * rhs.shape[-1] + 50):
        if bool((residual_norm2 <= threshold).all()):
            break
        applied = apply(padded_direction)
        step = residual_norm2 / torch.linalg.vecdot(direction, applied).clamp_min(tiny)
        solution.addcmul_(step[..., None], direction)
        residual.addcmul_(step[..., None], applied, value=-1.0)
        new_norm2 = torch.linalg.vecdot(residual, residual)
        direction.mul_((new_norm2 / residual_norm2.clamp_min(tiny))[..., None]).add_(residual)
        residual_norm2 = new_norm2
    return solution


class _BandSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rhs: torch.Tensor, start: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        ctx.matrix = matrix
        return _conjugate_gradient(matrix, rhs, start)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        return _conjugate_gradient(ctx.matrix, grad, torch.zeros_like(grad)), None, None


def solve_band(rhs: torch.Tensor, start: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Solve ``matrix @ x = rhs`` (``band_laplacian_matrix``) for ``rhs [G, C, K]`` by CG.

    ``start`` is the initial guess (it changes the iteration count, not the answer); the result is
    differentiable with respect to ``rhs`` (the backward is the same symmetric solve).
    """
    return _BandSolve.apply(rhs.contiguous(), start.detach().contiguous(), matrix)
