"""A trained model as ONNX: one sampling step, so that any ONNX runtime can drive it.

The graph is `model.Stepper.step` itself, traced by PyTorch's ONNX exporter (torch.export
and onnxscript), so the runtime computes the same equations as `charlstm sample`:

    inputs   id      int64   (batch,)                   the previous character's id
             hidden  float32 (layers, batch, hidden)    every layer's h
             cell    float32 (layers, batch, hidden)    every layer's c (LSTM and IndyLSTM only)
    outputs  logits       float32 (batch, vocab)        scores for the next character
             next_hidden  float32 (layers, batch, hidden)
             next_cell    float32 (layers, batch, hidden)  (LSTM and IndyLSTM only)

A caller starts from zeros, feeds each output state back as the next input state, and
decodes ids with the vocabulary stored in the model's metadata (`METADATA_VOCABULARY`,
a JSON string whose i-th character has id i). docs/export.md has a sampling loop.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from charlstm.errors import CharlstmError
from charlstm.model import CharLSTM, Stepper
from charlstm.tokenizer import Vocabulary

METADATA_VOCABULARY = "charlstm.vocabulary"
METADATA_CONFIG = "charlstm.model_config"
INSTALL_HINT = "pip install 'charlstm[onnx]'"
OPSET = 18
"""ONNX opset 18 (2022): onnxruntime 1.14 and later, and every current runtime, read it."""


def require_onnx() -> None:
    """Refuse early, in one line, when the packages the exporter needs are missing."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        packages = " and ".join(missing) + (" packages" if len(missing) > 1 else " package")
        raise CharlstmError(f"--onnx needs the {packages}: {INSTALL_HINT}")


def portable_stepper(model: CharLSTM) -> Stepper:
    """A `Stepper` whose weight matrices are plain (in x out) matrices.

    `fast_matmul.column_blocks` cuts large matrices into one block per CPU thread of the machine
    it runs on; an exported model must not depend on how many cores the exporting machine
    had, so the blocks are put back together. `fast_matmul.affine` then runs one product: the
    same dot products, summed in one piece.
    """
    stepper = Stepper(model)
    for cell in stepper.cells:
        for name, value in vars(cell).items():
            if name.endswith("_blocks"):
                setattr(cell, name, unblocked(value))
    stepper.decoder_weight = unblocked(stepper.decoder_weight)
    return stepper


def unblocked(weight: Tensor) -> Tensor:
    """The (in x out) matrix that `column_blocks` cut into (blocks x in x out/blocks)."""
    if weight.dim() == 2:
        return weight
    blocks, width_in, width = weight.shape
    return weight.transpose(0, 1).reshape(width_in, blocks * width).contiguous()


class SamplingStep(nn.Module):
    """`Stepper.step` with the state as stacked tensors, the shape ONNX inputs take."""

    def __init__(self, stepper: Stepper):
        super().__init__()
        self.stepper = stepper

    def forward(self, ids: Tensor, hidden: Tensor, cell: Tensor | None = None) -> tuple[Tensor, ...]:
        layers = hidden.shape[0]
        state = [(hidden[k],) if cell is None else (hidden[k], cell[k]) for k in range(layers)]
        logits, new_state, _ = self.stepper.step(ids, state)
        return (logits, *self.stepper.to_fused_state(new_state))


def state_names(model: CharLSTM) -> tuple[str, ...]:
    """The state inputs in order; the outputs carry the same names with `next_` before them."""
    return ("hidden", "cell")[: model.state_size]


def onnx_bytes(model: CharLSTM, vocabulary: Vocabulary) -> bytes:
    """The serialized ONNX model of one sampling step, the vocabulary in its metadata."""
    require_onnx()
    step = SamplingStep(portable_stepper(model)).eval()
    names = state_names(model)
    batch = torch.export.Dim("batch")
    example_state = {name: torch.zeros(model.config.layers, 1, model.config.hidden) for name in names}
    with _quiet_exporter():
        program = torch.onnx.export(
            step,
            (torch.zeros(1, dtype=torch.long),),
            kwargs=example_state,
            dynamo=True,
            opset_version=OPSET,
            input_names=["id", *names],
            output_names=["logits", *(f"next_{name}" for name in names)],
            dynamic_shapes={"ids": {0: batch}, **{name: {1: batch} for name in names}},
            verbose=False,
        )
    proto = program.model_proto
    proto.doc_string = "charlstm: one sampling step of a character-level language model"
    metadata = {
        METADATA_VOCABULARY: json.dumps(vocabulary.chars),
        METADATA_CONFIG: json.dumps(dataclasses.asdict(model.config)),
    }
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs and warns about things that do not concern a user (torchvision's
    absent operators, deprecations inside torch); hide them for the duration of an export."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
