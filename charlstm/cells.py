"""The recurrent cells written out, one equation a line, every gate a named tensor.

The LSTM, one step from input x and state (h, c), with σ the logistic sigmoid and ⊙ the
elementwise product:

    input_gate  = σ(W_ii x + b_ii + W_hi h + b_hi)      how much to write
    forget_gate = σ(W_if x + b_if + W_hf h + b_hf)      how much of c to keep
    candidate   = tanh(W_ig x + b_ig + W_hg h + b_hg)   what to write
    output_gate = σ(W_io x + b_io + W_ho h + b_ho)      how much of c to show
    c' = forget_gate ⊙ c + input_gate ⊙ candidate
    h' = output_gate ⊙ tanh(c')

The GRU, the IndyLSTM and the plain RNN follow, each with its equations. The cells read
PyTorch's own parameter layout, so one set of weights serves the fused kernels that train
(nn.LSTM, nn.GRU, nn.RNN) and these cells that sample and inspect; tests hold the two equal:

    LSTM      weight_ih (4H x in), weight_hh (4H x H), gate rows in the order i, f, g, o
    GRU       weight_ih (3H x in), weight_hh (3H x H), gate rows in the order r, z, n
    RNN       weight_ih (H x in),  weight_hh (H x H)
    IndyLSTM  weight_ih (4H x in), weight_hh (4H,): one recurrent weight per unit and
              gate (Gonnet & Deselaers 2019), gate rows i, f, g, o as in the LSTM

Each cell splits its work in two: `project_input` (the part that depends only on the
input, which a caller may compute for many steps at once, or look up from a table for
the first layer) and `step` (the recurrence, one time step). `step` returns the new
state and the gate activations, named by `gate_names`, for inspection. The matrices are
kept in the layout a one-row product reads fastest (`fast_matmul`).

Each cell also says what the rest of charlstm needs to know of it, so that no other module
asks a cell's name: `sigmoid_gates` (the gates in [0, 1], which inspect-gates counts as
saturated and colours on a fixed scale) and `page_tensors` (the arrays the exported HTML
page's step reads, `export_html.py`).

`CELLS`, at the end, is the one registry of cell kinds: for each name, the fused module
that trains it, the explicit cell and how to build it from that module's weights. Adding a
cell means adding a class here and an entry there, its name to `config.CELL_TYPES` (the
torch-free list `--help` and validation read; a test holds it to `CELLS`), and its step to
the exported page's JavaScript (`export_page.html`); docs/design.md walks through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from charlstm.fast_matmul import affine, column_blocks
from charlstm.indylstm import IndyLSTM

State = tuple[Tensor, ...]


class LSTMCell:
    """Long short-term memory (Hochreiter & Schmidhuber 1997, with a forget gate): the
    equations at the top of this module. The pre-activations come in PyTorch's row order
    i, f, g, o (input, forget, candidate, output)."""

    state_names = ("hidden", "cell")
    gate_names = ("input", "forget", "candidate", "output")
    sigmoid_gates = ("input", "forget", "output")

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

    def page_tensors(self) -> dict[str, Tensor]:
        """The arrays the exported page's step reads for this layer (named as in `export_html`);
        the first layer's w_ih and b_ih are left out there, folded into its lookup table."""
        return {"w_ih": self.weight_ih_blocks, "b_ih": self.bias, "w_hh": self.weight_hh_blocks}


class IndyLSTMCell(LSTMCell):
    """IndyLSTM: the LSTM with a diagonal recurrence, W_h· h replaced by u_· ⊙ h.

    Each unit sees only its own past, so the recurrent cost is O(H) instead of O(H²) and
    units stay independent, which makes them easy to read in inspect-gates. No fused
    kernel exists for it: it trains through `indylstm.IndyLSTMSequence`, this step unrolled
    over a sequence with a hand-written backward.
    """

    def __init__(self, weight_ih: Tensor, weight_hh: Tensor, bias: Tensor):
        self.weight_ih_blocks = column_blocks(weight_ih)
        self.weight_hh = weight_hh
        self.bias = bias

    def recurrent_preactivation(self, x_projected: Tensor, h: Tensor) -> Tensor:
        return torch.addcmul(x_projected, h.repeat(1, 4), self.weight_hh)

    def page_tensors(self) -> dict[str, Tensor]:
        return {"w_ih": self.weight_ih_blocks, "b_ih": self.bias, "u": self.weight_hh}


class GRUCell:
    """Gated recurrent unit (Cho et al. 2014), in PyTorch's formulation.

    r = σ(W_ir x + b_ir + W_hr h + b_hr)              reset gate
    z = σ(W_iz x + b_iz + W_hz h + b_hz)              update gate: how much of h to keep
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))     new state candidate
    h' = (1 - z) ⊙ n + z ⊙ h
    """

    state_names = ("hidden",)
    gate_names = ("reset", "update", "new")
    sigmoid_gates = ("reset", "update")

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

    def page_tensors(self) -> dict[str, Tensor]:
        """b_ih and b_hh apart: the reset gate scales the recurrent part with its bias."""
        weights = {"w_ih": self.weight_ih_blocks, "b_ih": self.bias_ih}
        return weights | {"w_hh": self.weight_hh_blocks, "b_hh": self.bias_hh}


class RNNCell:
    """The plain (Elman) recurrent network: h' = tanh(W_ih x + b_ih + W_hh h + b_hh)."""

    state_names = ("hidden",)
    gate_names: tuple[str, ...] = ()
    sigmoid_gates: tuple[str, ...] = ()

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

    def page_tensors(self) -> dict[str, Tensor]:
        return {"w_ih": self.weight_ih_blocks, "b_ih": self.bias, "w_hh": self.weight_hh_blocks}


Cell = LSTMCell | IndyLSTMCell | GRUCell | RNNCell

PYTORCH_PARAMETERS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # per layer, in nn.LSTM/GRU/RNN


@dataclass(frozen=True)
class CellKind:
    """One kind of cell: how it trains, how it steps, and what its quantities are called.

    `fused(input_size=, hidden_size=, num_layers=, dropout=)` builds the module that runs
    whole sequences (batch first); its layer k holds the parameters `{name}_l{k}` for each
    name in `parameters`, in the order the explicit `cell` takes them. `forget_bias` names
    the bias whose forget-gate rows start at 1 (None: the cell has no forget gate).
    """

    name: str
    cell: type[Cell]
    fused: Callable[..., nn.Module]
    parameters: tuple[str, ...]
    forget_bias: str | None = None

    @property
    def gate_names(self) -> tuple[str, ...]:
        return self.cell.gate_names

    @property
    def state_names(self) -> tuple[str, ...]:
        return self.cell.state_names

    @property
    def sigmoid_gates(self) -> tuple[str, ...]:
        return self.cell.sigmoid_gates

    @property
    def quantities(self) -> tuple[str, ...]:
        """What a trace records per unit: the gates, then the state."""
        return (*self.gate_names, *self.state_names)

    def fused_module(self, input_size: int, hidden_size: int, num_layers: int, dropout: float) -> nn.Module:
        return self.fused(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers, dropout=dropout)

    def cell_of(self, module: nn.Module, layer: int) -> Cell:
        """The explicit cell of `layer`, reading `module`'s parameters (kept in fast_matmul's layout)."""
        return self.cell(*(getattr(module, f"{name}_l{layer}") for name in self.parameters))


CELLS: dict[str, CellKind] = {
    kind.name: kind
    for kind in (
        CellKind("lstm", LSTMCell, partial(nn.LSTM, batch_first=True), PYTORCH_PARAMETERS, forget_bias="bias_hh"),
        CellKind("gru", GRUCell, partial(nn.GRU, batch_first=True), PYTORCH_PARAMETERS),
        CellKind("indylstm", IndyLSTMCell, IndyLSTM, IndyLSTM.parameter_names, forget_bias="bias"),
        CellKind("rnn", RNNCell, partial(nn.RNN, batch_first=True), PYTORCH_PARAMETERS),
    )
}
