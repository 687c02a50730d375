"""One-row matrix products that read the weights as fast as the machine can.

A batch-one step (sampling, inspection) is bound by reading the weight matrices, not by
arithmetic. So the explicit cells keep each matrix in the layout that streams fastest:
transposed and contiguous (in x out), instead of a transposed view of PyTorch's (out x in)
layout; and a large matrix is cut into one block of output columns per CPU thread, so that
a one-row product, which PyTorch's CPU BLAS runs on one thread, becomes a batched product
that every core shares. `benchmarks/one_row_product.py` measures each layout against the
others; the 4 MB threshold below is where blocks started to pay on the machine it was
chosen on.

Each output is still one dot product of the same numbers; only the rounding of the sums
may differ from PyTorch's own product.
"""

from __future__ import annotations

import torch
from torch import Tensor

BLOCKS_FROM_ELEMENTS = 2**20  # 4 MB of float32: below this, one block (the batched product's own cost wins)


def column_blocks(weight: Tensor) -> Tensor:
    """`weight` (out x in) kept as `affine` reads it: transposed and contiguous, and from
    `BLOCKS_FROM_ELEMENTS` on, cut into one block of columns per CPU thread (blocks x in x
    out/blocks), as many blocks as divide the columns evenly. A GPU needs no blocks."""
    out, width_in = weight.shape
    threads = torch.get_num_threads() if weight.device.type == "cpu" and weight.numel() >= BLOCKS_FROM_ELEMENTS else 1
    blocks = max(b for b in range(1, threads + 1) if out % b == 0)
    if blocks == 1:
        return weight.t().contiguous()
    return weight.t().reshape(width_in, blocks, out // blocks).transpose(0, 1).contiguous()


def affine(shift: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """shift + x Wᵀ, for W kept as `column_blocks`: one `addmm`, or one `baddbmm` over
    the column blocks (one block per thread) whose outputs are laid side by side."""
    if weight.dim() == 2:
        return torch.addmm(shift, x, weight)
    blocks, _, width = weight.shape
    shift = shift.view(-1, blocks, width).transpose(0, 1)
    return torch.baddbmm(shift, x.expand(blocks, *x.shape), weight).transpose(0, 1).reshape(x.shape[0], -1)
