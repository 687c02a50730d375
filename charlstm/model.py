"""CharLSTM: embedding -> recurrent stack -> decoder, with two ways to run it.

`CharLSTM.forward` runs whole sequences through the fused kernels (nn.LSTM, nn.GRU,
nn.RNN: cuDNN on CUDA, oneDNN on the CPU): that is the training path. `Stepper` runs one
character at a time through the explicit cells of `cells.py`, reading the very same
parameters: that is the sampling and inspection path, about ten times faster than
calling a fused kernel per character on the CPU. Tests hold the two paths equal.

The IndyLSTM has no fused kernel; its module here loops over time with the explicit
cell in both roles.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from charlstm.cells import Cell, GRUCell, IndyLSTMCell, LSTMCell, RNNCell, State, affine, column_blocks
from charlstm.config import CELL_TYPES as CELL_TYPES  # the cell names, for model's importers
from charlstm.config import ModelConfig


class IndyLSTMSequence(torch.autograd.Function):
    """The IndyLSTM recurrence over a whole sequence, with a hand-written backward.

    The recurrence is elementwise, so its cost is all per-step overhead; recording an
    autograd graph of ~12 small ops per step doubles it. This runs the forward without a
    graph, keeps the activations, and walks back once (torch-rnn's approach). It is
    `IndyLSTMCell` unrolled; tests hold its outputs to the cell's and its gradients to
    autograd's. Runs in float32 whatever the autocast setting.

    Shapes: projected (B, T, 4H) = W_ih x + b for every step; weight_hh (4H,); h, c (B, H).
    """

    @staticmethod
    def forward(ctx, projected: Tensor, weight_hh: Tensor, h: Tensor, c: Tensor):
        batch, steps, four_h = projected.shape
        hidden = four_h // 4
        u = weight_hh.view(4, hidden)
        pre = projected.view(batch, steps, 4, hidden)
        gates = projected.new_empty(steps, batch, 4, hidden)
        cells = projected.new_empty(steps + 1, batch, hidden)
        tanh_cells = projected.new_empty(steps, batch, hidden)
        hiddens = projected.new_empty(steps + 1, batch, hidden)
        cells[0], hiddens[0] = c, h
        for t in range(steps):
            step_pre = torch.addcmul(pre[:, t], hiddens[t][:, None, :], u)
            torch.sigmoid(step_pre, out=gates[t])
            torch.tanh(step_pre[:, 2], out=gates[t][:, 2])
            input_gate, forget_gate, candidate, output_gate = gates[t].unbind(1)
            torch.addcmul(forget_gate * cells[t], input_gate, candidate, out=cells[t + 1])
            torch.tanh(cells[t + 1], out=tanh_cells[t])
            torch.mul(output_gate, tanh_cells[t], out=hiddens[t + 1])
        ctx.save_for_backward(u, gates, cells, tanh_cells, hiddens)
        return hiddens[1:].transpose(0, 1), hiddens[steps].clone(), cells[steps].clone()

    @staticmethod
    def backward(ctx, d_outputs: Tensor, d_h_last: Tensor, d_c_last: Tensor):
        u, gates, cells, tanh_cells, hiddens = ctx.saved_tensors
        steps = gates.shape[0]
        d_pre = torch.empty_like(gates)
        d_h, d_c = d_h_last.clone(), d_c_last.clone()
        for t in reversed(range(steps)):
            d_h = d_h + d_outputs[:, t]
            input_gate, forget_gate, candidate, output_gate = gates[t].unbind(1)
            d_c = d_c + d_h * output_gate * (1 - tanh_cells[t] * tanh_cells[t])
            torch.mul(d_c * candidate, input_gate * (1 - input_gate), out=d_pre[t][:, 0])
            torch.mul(d_c * cells[t], forget_gate * (1 - forget_gate), out=d_pre[t][:, 1])
            torch.mul(d_c * input_gate, 1 - candidate * candidate, out=d_pre[t][:, 2])
            torch.mul(d_h * tanh_cells[t], output_gate * (1 - output_gate), out=d_pre[t][:, 3])
            d_h = (d_pre[t] * u).sum(1)
            d_c = d_c * forget_gate
        d_u = (d_pre * hiddens[:-1, :, None, :]).sum((0, 1)).reshape(-1)
        d_projected = d_pre.permute(1, 0, 2, 3).reshape(d_outputs.shape[0], steps, -1)
        return d_projected, d_u, d_h, d_c


class IndyLSTM(nn.Module):
    """A stack of IndyLSTM layers with nn.LSTM's calling convention (batch first).

    Parameters per layer k: weight_ih_l{k} (4H x in), weight_hh_l{k} (4H,), bias_l{k} (4H,).
    The input projection of all steps is one matrix product; only the cheap diagonal
    recurrence runs per step, in `IndyLSTMSequence`.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dropout: float):
        super().__init__()
        self.hidden_size, self.num_layers, self.dropout = hidden_size, num_layers, dropout
        bound = hidden_size**-0.5
        for k in range(num_layers):
            fan_in = input_size if k == 0 else hidden_size
            weight_ih = nn.Parameter(torch.empty(4 * hidden_size, fan_in).uniform_(-bound, bound))
            self.register_parameter(f"weight_ih_l{k}", weight_ih)
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(4 * hidden_size).uniform_(-1.0, 1.0)))
            self.register_parameter(f"bias_l{k}", nn.Parameter(torch.empty(4 * hidden_size).uniform_(-bound, bound)))

    def cell(self, k: int) -> IndyLSTMCell:
        return IndyLSTMCell(
            getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"), getattr(self, f"bias_l{k}")
        )

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        hs, cs = [], []
        for k in range(self.num_layers):
            if k > 0:
                x = nn.functional.dropout(x, self.dropout, self.training)
            batch, steps, _ = x.shape
            projected = self.cell(k).project_input(x.reshape(batch * steps, -1)).view(batch, steps, -1)
            weight_hh = getattr(self, f"weight_hh_l{k}")
            x, h, c = IndyLSTMSequence.apply(
                projected.float(), weight_hh.float(), state[0][k].float(), state[1][k].float()
            )
            hs.append(h)
            cs.append(c)
        return x, (torch.stack(hs), torch.stack(cs))


def _fused_recurrent(config: ModelConfig) -> nn.Module:
    kinds = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
    inter_layer_dropout = config.dropout if config.layers > 1 else 0.0
    if config.cell == "indylstm":
        return IndyLSTM(config.embedding, config.hidden, config.layers, inter_layer_dropout)
    return kinds[config.cell](
        config.embedding, config.hidden, config.layers, batch_first=True, dropout=inter_layer_dropout
    )


class CharLSTM(nn.Module):
    """A character-level language model; `config.cell` picks the recurrence."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding)
        self.recurrent = _fused_recurrent(config)
        self.dropout = nn.Dropout(config.dropout)
        self.decoder = nn.Linear(config.hidden, config.vocab_size)
        if config.cell in ("lstm", "indylstm"):
            self._open_forget_gates()

    def _open_forget_gates(self) -> None:
        """Forget-gate bias 1 so memory is kept by default (Jozefowicz et al. 2015)."""
        h = self.config.hidden
        with torch.no_grad():
            for k in range(self.config.layers):
                name = f"bias_hh_l{k}" if self.config.cell == "lstm" else f"bias_l{k}"
                getattr(self.recurrent, name)[h : 2 * h] = 1.0

    @property
    def state_size(self) -> int:
        """How many tensors make the state: (h, c) for LSTMs, (h,) otherwise."""
        return 2 if self.config.cell in ("lstm", "indylstm") else 1

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> State:
        shape = (self.config.layers, batch, self.config.hidden)
        return tuple(torch.zeros(shape, device=device) for _ in range(self.state_size))

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Logits (batch x steps x vocab) and the final state, through the fused kernel."""
        if state is None:
            state = self.initial_state(ids.shape[0], ids.device)
        x = self.embedding(ids)
        fused_state = state if self.state_size == 2 else state[0]
        out, new_state = self.recurrent(x, fused_state)
        new_state = tuple(new_state) if self.state_size == 2 else (new_state,)
        return self.decoder(self.dropout(out)), new_state

    def cells(self) -> list[Cell]:
        """The explicit cells of every layer, reading this model's parameters."""
        if self.config.cell == "indylstm":
            return [self.recurrent.cell(k) for k in range(self.config.layers)]
        kind = {"lstm": LSTMCell, "gru": GRUCell, "rnn": RNNCell}[self.config.cell]
        r = self.recurrent
        return [
            kind(
                getattr(r, f"weight_ih_l{k}"),
                getattr(r, f"weight_hh_l{k}"),
                getattr(r, f"bias_ih_l{k}"),
                getattr(r, f"bias_hh_l{k}"),
            )
            for k in range(self.config.layers)
        ]


class Stepper:
    """One character at a time through the explicit cells, on a model's own weights.

    The first layer's input projection depends only on the character, so it is computed
    once for the whole vocabulary and looked up; each step then costs one recurrent
    product per layer, one input product per upper layer and the decoder.
    """

    def __init__(self, model: CharLSTM):
        with torch.no_grad():
            self.cells = [_detached(cell) for cell in model.cells()]
            self.first_layer_inputs = self.cells[0].project_input(model.embedding.weight.detach())
        self.decoder_weight = column_blocks(model.decoder.weight.detach())
        self.decoder_bias = model.decoder.bias.detach()
        self.config = model.config
        self.state_size = model.state_size

    def initial_state(self, batch: int = 1) -> list[State]:
        zeros = torch.zeros(batch, self.config.hidden, device=self.decoder_bias.device)
        return [tuple(zeros for _ in range(self.state_size)) for _ in range(self.config.layers)]

    @torch.no_grad()
    def step(self, ids: Tensor, state: list[State]) -> tuple[Tensor, list[State], list[tuple[Tensor, ...]]]:
        """Logits for the next character after `ids` (batch,), the new state per layer,
        and each layer's gate activations in its cell's `gate_names` order."""
        x_projected = self.first_layer_inputs[ids]
        new_state, gates = [], []
        for k, cell in enumerate(self.cells):
            if k > 0:
                x_projected = cell.project_input(new_state[-1][0])
            layer_state, layer_gates = cell.step(x_projected, state[k])
            new_state.append(layer_state)
            gates.append(layer_gates)
        logits = affine(self.decoder_bias, new_state[-1][0], self.decoder_weight)
        return logits, new_state, gates

    def to_fused_state(self, state: list[State]) -> State:
        return tuple(torch.stack([layer[i] for layer in state]) for i in range(self.state_size))


def _detached(cell: Cell) -> Cell:
    for name, value in vars(cell).items():
        setattr(cell, name, value.detach())
    return cell


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
