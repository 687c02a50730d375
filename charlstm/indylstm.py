"""The IndyLSTM's training path: the recurrence over a whole sequence, with its backward
pass written by hand, and a layer stack with nn.LSTM's calling convention.

PyTorch has no fused kernel for the IndyLSTM (the LSTM with one recurrent weight per unit
and gate, `cells.IndyLSTMCell`), so it trains here; it samples and is inspected through its
explicit cell, like every other cell. Tests hold `IndyLSTMSequence` to the cell's outputs
and to autograd's gradients through the cell.

Why a hand-written backward: the recurrence is elementwise, so its cost is all per-step
overhead, and autograd would record a graph of a dozen small ops per step on top of it.
The forward runs without a graph and keeps the activations; the backward walks back once
over them (torch-rnn's approach). `benchmarks/cells.py` reports its training speed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from charlstm.fast_matmul import affine, column_blocks


class IndyLSTMSequence(torch.autograd.Function):
    """`IndyLSTMCell.step` unrolled over time, in float32 whatever the autocast setting.

    Shapes: projected (B, T, 4H) = W_ih x + b for every step; weight_hh (4H,) = u; h, c (B, H).
    Returns every step's hidden state (B, T, H), and the last h and c (B, H).
    Gate rows in the order i, f, g, o, as everywhere in charlstm.
    """

    @staticmethod
    def forward(ctx, projected: Tensor, weight_hh: Tensor, h: Tensor, c: Tensor):
        batch, steps, four_h = projected.shape
        hidden = four_h // 4
        u = weight_hh.view(4, hidden)  # one recurrent weight per gate and unit
        pre = projected.view(batch, steps, 4, hidden)
        # Kept for the backward pass: gates[t] = (i, f, g, o) at step t; cells[t] and
        # hiddens[t] are the state *before* step t (cells[0] = c, hiddens[0] = h).
        gates = projected.new_empty(steps, batch, 4, hidden)
        cells = projected.new_empty(steps + 1, batch, hidden)
        tanh_cells = projected.new_empty(steps, batch, hidden)
        hiddens = projected.new_empty(steps + 1, batch, hidden)
        cells[0], hiddens[0] = c, h
        for t in range(steps):
            step_pre = torch.addcmul(pre[:, t], hiddens[t][:, None, :], u)  # W_ih x + b + u ⊙ h
            torch.sigmoid(step_pre, out=gates[t])  # i, f, o = σ(...) (g's row is overwritten next)
            torch.tanh(step_pre[:, 2], out=gates[t][:, 2])  # g = tanh(...)
            input_gate, forget_gate, candidate, output_gate = gates[t].unbind(1)
            torch.addcmul(forget_gate * cells[t], input_gate, candidate, out=cells[t + 1])  # c' = f ⊙ c + i ⊙ g
            torch.tanh(cells[t + 1], out=tanh_cells[t])
            torch.mul(output_gate, tanh_cells[t], out=hiddens[t + 1])  # h' = o ⊙ tanh(c')
        ctx.save_for_backward(u, gates, cells, tanh_cells, hiddens)
        return hiddens[1:].transpose(0, 1), hiddens[steps].clone(), cells[steps].clone()

    @staticmethod
    def backward(ctx, d_outputs: Tensor, d_h_last: Tensor, d_c_last: Tensor):
        """The chain rule through each step, last step first.

        Names: d_x is the gradient of the loss with respect to x. d_input_gate and its
        siblings are taken with respect to the gate's *pre-activation* (the sum inside σ or
        tanh), which is what W_ih, b and u multiply, so they are all the weights need.
        """
        u, gates, cells, tanh_cells, hiddens = ctx.saved_tensors
        steps = gates.shape[0]
        d_pre = torch.empty_like(gates)  # (steps, batch, 4, H): every step's four gate gradients
        # What flows into the last state from beyond the sequence (the caller's use of h_T, c_T).
        d_h, d_c = d_h_last.clone(), d_c_last.clone()
        for t in reversed(range(steps)):
            input_gate, forget_gate, candidate, output_gate = gates[t].unbind(1)
            d_input_gate, d_forget_gate, d_candidate, d_output_gate = d_pre[t].unbind(1)  # views written below
            c_before, tanh_c = cells[t], tanh_cells[t]  # c_{t-1}, and tanh(c_t)

            # h_t feeds the layer above (d_outputs) and step t+1 (d_h, carried from that step).
            d_h = d_h + d_outputs[:, t]
            # h_t = o ⊙ tanh(c_t): c_t gets d_h through tanh (tanh' = 1 - tanh²), plus what
            # step t+1 sent back through its f ⊙ c_t.
            d_c = d_c + d_h * output_gate * (1 - tanh_c * tanh_c)
            # c_t = f ⊙ c_{t-1} + i ⊙ g, then through each nonlinearity: σ' = σ(1 - σ), tanh' = 1 - tanh².
            torch.mul(d_c * candidate, input_gate * (1 - input_gate), out=d_input_gate)  # ∂c_t/∂i = g
            torch.mul(d_c * c_before, forget_gate * (1 - forget_gate), out=d_forget_gate)  # ∂c_t/∂f = c_{t-1}
            torch.mul(d_c * input_gate, 1 - candidate * candidate, out=d_candidate)  # ∂c_t/∂g = i
            # h_t = o ⊙ tanh(c_t): ∂h_t/∂o = tanh(c_t).
            torch.mul(d_h * tanh_c, output_gate * (1 - output_gate), out=d_output_gate)

            # Back to the state before step t. Each gate's pre-activation holds u_gate ⊙ h_{t-1}:
            # h_{t-1} collects all four; c_{t-1} reaches c_t only through f.
            d_h = (d_pre[t] * u).sum(1)
            d_c = d_c * forget_gate
        # u met h_{t-1} at every step and in every batch row: sum those products.
        d_u = (d_pre * hiddens[:-1, :, None, :]).sum((0, 1)).reshape(-1)
        # The projected input entered each pre-activation with weight 1.
        d_projected = d_pre.permute(1, 0, 2, 3).reshape(d_outputs.shape[0], steps, -1)
        return d_projected, d_u, d_h, d_c


class IndyLSTM(nn.Module):
    """A stack of IndyLSTM layers with nn.LSTM's calling convention (batch first).

    Parameters per layer k: weight_ih_l{k} (4H x in), weight_hh_l{k} (4H,), bias_l{k} (4H,).
    The input projection of all steps is one matrix product; only the cheap diagonal
    recurrence runs per step, in `IndyLSTMSequence`.
    """

    parameter_names = ("weight_ih", "weight_hh", "bias")  # per layer, as IndyLSTMCell takes them

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

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        hs, cs = [], []
        for k in range(self.num_layers):
            if k > 0:
                x = nn.functional.dropout(x, self.dropout, self.training)
            batch, steps, _ = x.shape
            weight_ih, weight_hh, bias = (getattr(self, f"{name}_l{k}") for name in self.parameter_names)
            # W_ih x + b for every step at once, as IndyLSTMCell.project_input computes it.
            projected = affine(bias, x.reshape(batch * steps, -1), column_blocks(weight_ih)).view(batch, steps, -1)
            x, h, c = IndyLSTMSequence.apply(
                projected.float(), weight_hh.float(), state[0][k].float(), state[1][k].float()
            )
            hs.append(h)
            cs.append(c)
        return x, (torch.stack(hs), torch.stack(cs))
