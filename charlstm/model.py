"""CharLSTM: embedding -> recurrent stack -> decoder, with two ways to run it.

`CharLSTM.forward` runs whole sequences through the cell kind's fused module (nn.LSTM,
nn.GRU, nn.RNN: cuDNN on CUDA, oneDNN on the CPU): that is the training path. `Stepper`
runs one character at a time through the explicit cells of `cells.py`, reading the very
same parameters: that is the sampling and inspection path, faster on the CPU than calling
a fused kernel per character (`benchmarks/sampling_speed.py` measures the two against each
other). Tests hold the two paths equal.

The IndyLSTM has no fused kernel: it trains through `indylstm.IndyLSTMSequence`, a
sequence function with a hand-written backward, and samples through its explicit cell.
What differs between cell kinds is looked up in `cells.CELLS`, never dispatched by name here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from charlstm.cells import CELLS, Cell, CellKind, State
from charlstm.config import CELL_TYPES as CELL_TYPES  # the cell names, for model's importers
from charlstm.config import ModelConfig
from charlstm.fast_matmul import affine, column_blocks

VOCABULARY_ROWS = ("embedding.weight", "decoder.weight", "decoder.bias")
"""The weights with one row per character: what grows with the vocabulary (`load_grown`)."""


class CharLSTM(nn.Module):
    """A character-level language model; `config.cell` picks the recurrence."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.kind: CellKind = CELLS[config.cell]
        self.embedding = nn.Embedding(config.vocab_size, config.embedding)
        inter_layer_dropout = config.dropout if config.layers > 1 else 0.0
        self.recurrent = self.kind.fused_module(config.embedding, config.hidden, config.layers, inter_layer_dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.decoder = nn.Linear(config.hidden, config.vocab_size)
        if self.kind.forget_bias is not None:
            self._open_forget_gates(self.kind.forget_bias)

    def _open_forget_gates(self, bias: str) -> None:
        """Forget-gate bias 1 so memory is kept by default (Jozefowicz et al. 2015)."""
        h = self.config.hidden
        rows = self.kind.gate_names.index("forget") * h
        with torch.no_grad():
            for k in range(self.config.layers):
                getattr(self.recurrent, f"{bias}_l{k}")[rows : rows + h] = 1.0

    @property
    def state_size(self) -> int:
        """How many tensors make the state: (h, c) for LSTMs, (h,) otherwise."""
        return len(self.kind.state_names)

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

    def load_grown(self, state: dict[str, Tensor], old_vocab_size: int) -> None:
        """Load the weights of a model whose vocabulary was this one's first `old_vocab_size`
        characters (`Vocabulary.extended`): its embedding and decoder rows become this model's
        first rows, so every old character keeps what it learned, and the rows of the
        characters added keep the initialisation this model was built with."""
        own = self.state_dict()
        grown = {}
        for name, value in state.items():
            if name in VOCABULARY_ROWS and value.shape[0] == old_vocab_size < own[name].shape[0]:
                value = torch.cat([value.to(own[name]), own[name][old_vocab_size:]])
            grown[name] = value
        self.load_state_dict(grown)

    def cells(self) -> list[Cell]:
        """The explicit cells of every layer, reading this model's parameters."""
        return [self.kind.cell_of(self.recurrent, k) for k in range(self.config.layers)]


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
