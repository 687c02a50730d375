"""A trained model as one HTML page that samples in the browser, offline.

The page (template `export_page.html`) carries everything: the model's description and
vocabulary as JSON, and the weights as one base64 string of little-endian float32, the
exact numbers of the checkpoint (base64 adds a third: 4/3 bytes per weight byte). Its
JavaScript runs `model.Stepper.step`'s equations on the very arrays the Stepper reads:

    input0     (vocab x gates*hidden)  layer 0's input projection of every character,
                                       bias included (the Stepper's lookup table)
    w_ih{k}    (hidden x gates*hidden) upper layers' input weights, transposed (in x out)
    b_ih{k}    (gates*hidden)          their bias (LSTM, RNN: b_ih + b_hh; GRU: b_ih)
    w_hh{k}    (hidden x gates*hidden) recurrent weights, transposed; IndyLSTM: u{k}
                                       (gates*hidden), one weight per unit and gate
    b_hh{k}    (gates*hidden)          GRU only: b_hh, which the reset gate scales
    w_out      (hidden x vocab)        decoder, transposed; b_out (vocab)

Gate order as in cells.py: i, f, g, o (LSTM, IndyLSTM); r, z, n (GRU). Nothing is
fetched: no network, no CDN, so the file works opened from disk.
"""

from __future__ import annotations

import array
import base64
import html
import json
import re
import sys
from importlib import resources

import torch
from torch import Tensor

from charlstm.export_onnx import portable_stepper
from charlstm.model import CharLSTM, parameter_count
from charlstm.tokenizer import Vocabulary

TEMPLATE = "export_page.html"
MODEL_MARK = "/*CHARLSTM_MODEL*/"
WEIGHTS_MARK = "/*CHARLSTM_WEIGHTS*/"
TITLE_MARK = "<!--CHARLSTM_TITLE-->"
FIRST_LAYER_LOOKUP = ("w_ih", "b_ih")  # layer 0's input projection is input0, a row per character


def page_tensors(model: CharLSTM) -> dict[str, Tensor]:
    """The arrays the page's step reads, named as in the module docstring: what each layer's
    cell says it needs (`page_tensors` in cells.py), numbered by layer, from the Stepper."""
    stepper = portable_stepper(model)
    tensors = {"input0": stepper.first_layer_inputs}
    for k, cell in enumerate(stepper.cells):
        for name, tensor in cell.page_tensors().items():
            if k > 0 or name not in FIRST_LAYER_LOOKUP:
                tensors[f"{name}{k}"] = tensor
    tensors["w_out"] = stepper.decoder_weight
    tensors["b_out"] = stepper.decoder_bias
    return tensors


def html_page(model: CharLSTM, vocabulary: Vocabulary, title: str) -> str:
    """The whole page as text: template, model description, weights."""
    tensors = page_tensors(model)
    index, offset, chunks = {}, 0, []
    for name, tensor in tensors.items():
        flat = tensor.detach().to(torch.float32).contiguous().view(-1)
        index[name] = {"offset": offset, "shape": list(tensor.shape)}
        offset += flat.numel()
        chunks.append(flat)
    raw = _float32_le(torch.cat(chunks))
    description = {
        "cell": model.config.cell,
        "layers": model.config.layers,
        "hidden": model.config.hidden,
        "parameters": parameter_count(model),
        "vocabulary": vocabulary.chars,
        "tensors": index,
    }
    filled = {
        TITLE_MARK: html.escape(title),
        MODEL_MARK: _script_json(description),
        WEIGHTS_MARK: base64.b64encode(raw).decode("ascii"),
    }
    template = resources.files("charlstm").joinpath(TEMPLATE).read_text(encoding="utf-8")
    # One pass, so that a title holding a mark cannot be filled in again.
    return re.sub("|".join(re.escape(mark) for mark in filled), lambda m: filled[m.group()], template)


def _float32_le(values: Tensor) -> bytes:
    """Little-endian float32 bytes without numpy (not a dependency of charlstm)."""
    floats = array.array("f", values.tolist())
    if sys.byteorder == "big":
        floats.byteswap()
    return floats.tobytes()


def _script_json(value: object) -> str:
    """JSON that can sit inside a <script> element: '</' could end the element early
    (a vocabulary may hold '</script>'), so it is written '<\\/', which JSON reads back as '</'."""
    return json.dumps(value, ensure_ascii=True).replace("</", "<\\/")
