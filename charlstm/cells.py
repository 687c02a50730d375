"""The recurrent cells written out, one equation a line, every gate a named tensor.

These are the reference: the fused kernels of `model.py` (nn.LSTM, nn.GRU, nn.RNN) must
agree with them, and tests hold them to it. They read PyTorch's own parameter layout, so
one set of weights serves both paths:

    LSTM      weight_ih (4H x in), weight_hh (4H x H), gate rows in the order i, f, g, o
    GRU       weight_ih (3H x in), weight_hh (3H x H), gate rows in the order r, z, n
    RNN       weight_ih (H x in),  weight_hh (H x H)
    IndyLSTM  weight_ih (4H x in), weight_hh (4H,): one recurrent weight per unit and
              gate (Gonnet & Deselaers 2019), gate rows i, f, g, o as in the LSTM

A batch-one step (sampling, inspection) is bound by reading the weight matrices, so the
cells keep them in the layout that reads fastest: transposed and contiguous (in x gates,
about three times faster to stream than a transposed view of PyTorch's layout), and large
ones cut into one block of gate columns per CPU thread (`column_blocks`, `affine`), so
that every core reads its share.

Each cell splits its work in two: `project_input` (the part that depends only on the
input, which a caller may compute for many steps at once, or look up from a table for
the first layer) and `step` (the recurrence, one time step). `step` returns the new
state and the gate activations, named by `gate_names`, for inspection.
"""

from __future__ import annotations

import torch
from torch import Tensor

State = tuple[Tensor, ...]


def column_blocks(weight: Tensor) -> Tensor:
    """`weight` (out x in) kept as `affine` reads it: transposed and contiguous, and when it
    is 4 MB or more, cut into one block of columns per CPU thread (blocks x in x out/blocks),
    so that a one-row product uses every core. Below 4 MB the batched product's own cost
    outweighed what a second core added (measured on 2 cores); a GPU needs no blocks."""
    out, width_in = weight.shape
    threads = torch.get_num_threads() if weight.device.type == "cpu" and weight.numel() >= 2**20 else 1
    blocks = max(b for b in range(1, threads + 1) if out % b == 0)
    if blocks == 1:
        return weight.t().contiguous()
    return weight.t().reshape(width_in, blocks, out // blocks).transpose(0, 1).contiguous()


def affine(shift: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """shift + x Wᵀ, for W kept as `column_blocks`.

    With one row of x the product is bound by reading W, and as one matrix product
    PyTorch's CPU BLAS runs it on one thread; as a batched product over column blocks it
    runs on all of them (1.6x faster for 4 MB on 2 cores, measured). Each output is still
    one dot product of the same numbers; only the rounding of the sums may differ.
    """
    if weight.dim() == 2:
        return torch.addmm(shift, x, weight)
    blocks, _, width = weight.shape
    shift = shift.view(-1, blocks, width).transpose(0, 1)
    return torch.baddbmm(shift, x.expand(blocks, *x.shape), weight).transpose(0, 1).reshape(x.shape[0], -1)


class LSTMCell:
    """Long short-term memory (Hochreiter & Schmidhuber 1997, with a forget gate).

    i = σ(W_ii x + b_ii + W_hi h + b_hi)        input gate: how much to write
    f = σ(W_if x + b_if + W_hf h + b_hf)        forget gate: how much of c to keep
    g = tanh(W_ig x + b_ig + W_hg h + b_hg)     candidate: what to write
    o = σ(W_io x + b_io + W_ho h + b_ho)        output gate: how much of c to show
    c' = f ⊙ c + i ⊙ g
    h' = o ⊙ tanh(c')
    """

    state_names = ("hidden", "cell")
    gate_names = ("input", "forget", "candidate", "output")

    def __init__(self, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor):
        self.weight_ih_blocks = column_blocks(weight_ih)
        self.weight_hh_blocks = column_blocks(weight_hh)
        self.bias = bias_ih + bias_hh

    def project_input(self, x: Tensor) -> Tensor:
        return affine(self.bias, x, self.weight_ih_blocks)

    def recurrent_preactivation(self, x_projected: Tensor, h: Tensor) -> Tensor:
        return affine(x_projected, h, self.weight_hh_blocks)

    def step(self, x_projected: Tensor, state: State) -> tuple[State, tuple[Tensor, ...]]:
        h, c = state
        preactivation = self.recurrent_preactivation(x_projected, h)
        i, f, g, o = preactivation.chunk(4, dim=1)
        input_gate = torch.sigmoid(i)
        forget_gate = torch.sigmoid(f)
        candidate = torch.tanh(g)
        output_gate = torch.sigmoid(o)
        c = forget_gate * c + input_gate * candidate
        h = output_gate * torch.tanh(c)
        return (h, c), (input_gate, forget_gate, candidate, output_gate)


class IndyLSTMCell(LSTMCell):
    """IndyLSTM: the LSTM with a diagonal recurrence, W_h· h replaced by u_· ⊙ h.

    Each unit sees only its own past, so the recurrent cost is O(H) instead of O(H²) and
    units stay independent, which makes them easy to read in inspect-gates.
    """

    def __init__(self, weight_ih: Tensor, weight_hh: Tensor, bias: Tensor):
        self.weight_ih_blocks = column_blocks(weight_ih)
        self.weight_hh = weight_hh
        self.bias = bias

    def recurrent_preactivation(self, x_projected: Tensor, h: Tensor) -> Tensor:
        return torch.addcmul(x_projected, h.repeat(1, 4), self.weight_hh)


class GRUCell:
    """Gated recurrent unit (Cho et al. 2014), in PyTorch's formulation.

    r = σ(W_ir x + b_ir + W_hr h + b_hr)              reset gate
    z = σ(W_iz x + b_iz + W_hz h + b_hz)              update gate: how much of h to keep
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))     new state candidate
    h' = (1 - z) ⊙ n + z ⊙ h
    """

    state_names = ("hidden",)
    gate_names = ("reset", "update", "new")

    def __init__(self, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor):
        self.weight_ih_blocks = column_blocks(weight_ih)
        self.weight_hh_blocks = column_blocks(weight_hh)
        self.bias_ih, self.bias_hh = bias_ih, bias_hh

    def project_input(self, x: Tensor) -> Tensor:
        return affine(self.bias_ih, x, self.weight_ih_blocks)

    def step(self, x_projected: Tensor, state: State) -> tuple[State, tuple[Tensor, ...]]:
        (h,) = state
        x_r, x_z, x_n = x_projected.chunk(3, dim=1)
        h_r, h_z, h_n = affine(self.bias_hh, h, self.weight_hh_blocks).chunk(3, dim=1)
        reset_gate = torch.sigmoid(x_r + h_r)
        update_gate = torch.sigmoid(x_z + h_z)
        new = torch.tanh(x_n + reset_gate * h_n)
        h = (1 - update_gate) * new + update_gate * h
        return (h,), (reset_gate, update_gate, new)


class RNNCell:
    """The plain (Elman) recurrent network: h' = tanh(W_ih x + b_ih + W_hh h + b_hh)."""

    state_names = ("hidden",)
    gate_names: tuple[str, ...] = ()

    def __init__(self, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor):
        self.weight_ih_blocks = column_blocks(weight_ih)
        self.weight_hh_blocks = column_blocks(weight_hh)
        self.bias = bias_ih + bias_hh

    def project_input(self, x: Tensor) -> Tensor:
        return affine(self.bias, x, self.weight_ih_blocks)

    def step(self, x_projected: Tensor, state: State) -> tuple[State, tuple[Tensor, ...]]:
        (h,) = state
        h = torch.tanh(affine(x_projected, h, self.weight_hh_blocks))
        return (h,), ()


Cell = LSTMCell | IndyLSTMCell | GRUCell | RNNCell
