"""The explicit cells are the reference; the fused kernels must agree with them."""

import re
from functools import partial
from pathlib import Path

import pytest
import torch

from charlstm import config, export_html, inspect, inspect_render, serve_info
from charlstm.cells import CELLS, PYTORCH_PARAMETERS, CellKind, GRUCell, IndyLSTMCell, LSTMCell, RNNCell
from charlstm.fast_matmul import affine, column_blocks
from charlstm.indylstm import IndyLSTMSequence
from charlstm.model import CELL_TYPES, CharLSTM, ModelConfig, Stepper
from charlstm.tokenizer import Vocabulary
from tests.helpers import invoke

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def run_explicit(model: CharLSTM, ids: torch.Tensor):
    stepper = Stepper(model)
    state = stepper.initial_state(ids.shape[0])
    logits = []
    for t in range(ids.shape[1]):
        step_logits, state, _ = stepper.step(ids[:, t], state)
        logits.append(step_logits)
    return torch.stack(logits, dim=1), stepper.to_fused_state(state)


def assert_paths_agree(model: CharLSTM, ids: torch.Tensor) -> None:
    """Same input, same weights: the same logits and final states (float32, tight tolerance)."""
    with torch.no_grad():
        fused_logits, fused_state = model(ids)
    explicit_logits, explicit_state = run_explicit(model, ids)
    torch.testing.assert_close(explicit_logits, fused_logits, atol=2e-5, rtol=1e-4)
    for explicit, fused in zip(explicit_state, fused_state, strict=True):
        torch.testing.assert_close(explicit, fused, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cell", CELL_TYPES)
def test_fused_and_explicit_paths_agree_on_the_same_weights(cell, device):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=50, cell=cell, layers=3, hidden=48, embedding=20, dropout=0.3)
    model = CharLSTM(config).to(device)
    ids = torch.randint(0, 50, (3, 300), device=device)
    # A few training steps with dropout on, so the weights are not the initial ones.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        logits, _ = model.train()(ids[:, :40])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:41].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    if device == "cuda":  # conftest's torch_settings fixture turns TF32 back on after the test
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    assert_paths_agree(model, ids)


def test_the_registry_knows_every_cell_and_its_cells_read_every_trained_parameter():
    """An explicit cell built from the registry reads each parameter of its layer, so no
    trained weight is left out of sampling and inspection; quantities are named once."""
    assert tuple(CELLS) == CELL_TYPES
    for name, kind in CELLS.items():
        module = kind.fused_module(input_size=5, hidden_size=4, num_layers=2, dropout=0.0)
        for layer in range(2):
            own = {n for n in dict(module.named_parameters()) if n.endswith(f"_l{layer}")}
            assert own == {f"{p}_l{layer}" for p in kind.parameters}, name
        cell = kind.cell_of(module, 1)
        state = tuple(torch.zeros(1, 4) for _ in kind.state_names)
        _, gates = cell.step(cell.project_input(torch.zeros(1, 4)), state)
        assert len(gates) == len(kind.gate_names) and kind.quantities == (*kind.gate_names, *kind.state_names)
        assert CharLSTM(ModelConfig(vocab_size=3, cell=name, hidden=4)).state_size == len(kind.state_names)


def test_forget_gates_start_open_where_the_cell_has_them():
    for name, kind in CELLS.items():
        model = CharLSTM(ModelConfig(vocab_size=3, cell=name, hidden=4, layers=2))
        biases = [getattr(model.recurrent, f"{kind.forget_bias}_l{k}") for k in range(2)] if kind.forget_bias else []
        assert [b[4:8].tolist() for b in biases] == [[1.0] * 4] * len(biases)
        assert ("forget" in kind.gate_names) == bool(biases), name


def test_lstm_cell_reads_like_its_equations():
    """One step by hand, gate by gate, in PyTorch's i, f, g, o row order."""
    torch.manual_seed(1)
    hidden, inputs = 3, 2
    w_ih, w_hh = torch.randn(4 * hidden, inputs), torch.randn(4 * hidden, hidden)
    b_ih, b_hh = torch.randn(4 * hidden), torch.randn(4 * hidden)
    x, h, c = torch.randn(1, inputs), torch.randn(1, hidden), torch.randn(1, hidden)
    cell = LSTMCell(w_ih, w_hh, b_ih, b_hh)
    (h_new, c_new), (i, f, g, o) = cell.step(cell.project_input(x), (h, c))
    pre = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    rows = lambda k: pre[:, k * hidden : (k + 1) * hidden]  # noqa: E731
    torch.testing.assert_close(i, torch.sigmoid(rows(0)))
    torch.testing.assert_close(f, torch.sigmoid(rows(1)))
    torch.testing.assert_close(g, torch.tanh(rows(2)))
    torch.testing.assert_close(o, torch.sigmoid(rows(3)))
    torch.testing.assert_close(c_new, f * c + i * g)
    torch.testing.assert_close(h_new, o * torch.tanh(c_new))


def _cells_float64(hidden=4, inputs=3):
    g = torch.Generator().manual_seed(2)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)  # noqa: E731
    return {
        "lstm": (LSTMCell, (r(4 * hidden, inputs), r(4 * hidden, hidden), r(4 * hidden), r(4 * hidden)), 2),
        "indylstm": (IndyLSTMCell, (r(4 * hidden, inputs), r(4 * hidden), r(4 * hidden)), 2),
        "gru": (GRUCell, (r(3 * hidden, inputs), r(3 * hidden, hidden), r(3 * hidden), r(3 * hidden)), 1),
        "rnn": (RNNCell, (r(hidden, inputs), r(hidden, hidden), r(hidden), r(hidden)), 1),
    }, r


@pytest.mark.parametrize("cell", CELL_TYPES)
def test_explicit_cell_gradients_match_numerical_gradients(cell):
    cells, r = _cells_float64()
    kind, weights, state_size = cells[cell]
    x = r(2, 3)
    state = tuple(r(2, 4) for _ in range(state_size))

    def two_steps(x, *args):
        c = kind(*args[: len(weights)])
        s = tuple(args[len(weights) :])
        s, _ = c.step(c.project_input(x), s)
        s, _ = c.step(c.project_input(torch.tanh(x)), s)
        return s

    assert torch.autograd.gradcheck(two_steps, (x, *weights, *state))


def test_indylstm_hand_written_backward_matches_autograd_through_the_explicit_cell():
    g = torch.Generator().manual_seed(3)
    batch, steps, hidden = 3, 7, 5
    projected = torch.randn(batch, steps, 4 * hidden, generator=g, dtype=torch.float64, requires_grad=True)
    weight_hh = torch.randn(4 * hidden, generator=g, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(batch, hidden, generator=g, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(batch, hidden, generator=g, dtype=torch.float64, requires_grad=True)
    inputs = (projected, weight_hh, h0, c0)
    assert torch.autograd.gradcheck(IndyLSTMSequence.apply, inputs)

    def reference(projected, weight_hh, h, c):
        cell = IndyLSTMCell(torch.zeros(4 * hidden, 1, dtype=torch.float64), weight_hh, torch.zeros(4 * hidden))
        outputs = []
        for t in range(steps):
            (h, c), _ = cell.step(projected[:, t], (h, c))
            outputs.append(h)
        return torch.stack(outputs, 1), h, c

    weights = [torch.randn(batch, steps, hidden, generator=g, dtype=torch.float64), 2.0, 3.0]
    gradients = []
    for run in (IndyLSTMSequence.apply, reference):
        outputs = run(*inputs)
        loss = sum((w * o).sum() for w, o in zip(weights, outputs, strict=True))
        gradients.append(torch.autograd.grad(loss, inputs))
    for fast, slow in zip(*gradients, strict=True):
        torch.testing.assert_close(fast, slow)


@pytest.mark.parametrize(
    "threads, shape, kept_shape",
    [
        (1, (2048, 512), (512, 2048)),
        (2, (2048, 512), (2, 512, 1024)),
        (3, (2048, 512), (2, 512, 1024)),  # the most blocks that divide the columns evenly
        (4, (2048, 512), (4, 512, 512)),
        (2, (12, 9), (9, 12)),  # under 4 MB: one block
    ],
)
@pytest.mark.parametrize("rows", [1, 5])
def test_affine_on_column_blocks_is_the_plain_product(threads, shape, kept_shape, rows):
    """Cutting W's columns into per-thread blocks changes how the product runs, not its value."""
    torch.manual_seed(2)
    weight, x = torch.randn(shape) / shape[1] ** 0.5, torch.randn(rows, shape[1])
    torch.set_num_threads(threads)
    kept = column_blocks(weight)
    assert kept.shape == kept_shape
    for shift in (torch.randn(shape[0]), torch.randn(rows, shape[0])):
        torch.testing.assert_close(affine(shift, x, kept), torch.addmm(shift, x, weight.t()))


def test_fused_and_explicit_paths_agree_where_the_weights_are_cut_into_blocks():
    """At 2x512 the recurrent matrices are 4 MB: the step reads them as column blocks."""
    torch.set_num_threads(2)
    torch.manual_seed(3)
    model = CharLSTM(ModelConfig(vocab_size=30, layers=2, hidden=512)).eval()
    ids = torch.randint(0, 30, (1, 20))
    assert Stepper(model).cells[1].weight_hh_blocks.shape == (2, 512, 1024)
    assert_paths_agree(model, ids)


class SquashedRNNCell(RNNCell):
    """A toy cell for the registry tests: the plain RNN, reporting one sigmoid gate."""

    gate_names = ("squash",)
    sigmoid_gates = ("squash",)

    def step(self, x_projected, state):
        (h,) = state
        preactivation = affine(x_projected, h, self.weight_hh_blocks)
        return (torch.tanh(preactivation),), (torch.sigmoid(preactivation),)

    def page_tensors(self):
        return super().page_tensors() | {"squash_bias": self.bias}


def test_every_cell_says_every_fact_the_rest_of_charlstm_reads():
    """Gates, which of them are sigmoids and the page's arrays come from the registry; the
    exported page's step reads every array a cell names, under that name."""
    page = (Path(export_html.__file__).parent / export_html.TEMPLATE).read_text(encoding="utf-8")
    read_by_page = set(re.findall(r'W\["(\w+)" \+ k\]', page))
    for name, kind in CELLS.items():
        assert set(kind.sigmoid_gates) <= set(kind.gate_names), name
        assert kind.state_names and kind.state_names[0] == "hidden", name
        model = CharLSTM(ModelConfig(vocab_size=5, cell=name, layers=2, hidden=4, embedding=3))
        tensors = export_html.page_tensors(model)
        per_layer = {t[:-1] for t in tensors if t.endswith("1")}
        assert per_layer <= read_by_page, f"{name}: the page reads no {per_layer - read_by_page}"
        first_layer = {t[:-1] for t in tensors if t.endswith("0") and t != "input0"}
        assert first_layer == per_layer - set(export_html.FIRST_LAYER_LOOKUP), name


def test_a_cell_added_to_the_registry_alone_is_seen_by_the_model_inspection_export_and_server(monkeypatch):
    kind = CellKind("squashed", SquashedRNNCell, partial(torch.nn.RNN, batch_first=True), PYTORCH_PARAMETERS)
    monkeypatch.setitem(CELLS, kind.name, kind)
    monkeypatch.setattr(config, "CELL_TYPES", (*config.CELL_TYPES, kind.name))
    torch.manual_seed(0)
    vocabulary = Vocabulary.from_text("abcab ")
    model = CharLSTM(ModelConfig(vocab_size=len(vocabulary), cell="squashed", layers=2, hidden=4, embedding=3)).eval()
    assert model.kind.quantities == ("squash", "hidden")
    inspection = inspect.inspect_text(model, vocabulary, "abcab abc" * 5)
    assert inspection.quantities == ("squash", "hidden") and inspection.sigmoid_gates == ("squash",)
    assert {row.gate for row in inspect.saturation_rows(inspection)} == {"squash"}
    raw = torch.tensor([0.0, 0.5, 1.0])
    assert inspect_render.display_value("squash", raw, inspection.sigmoid_gates).tolist() == [-1.0, 0.0, 1.0]
    assert {"squash_bias0", "squash_bias1", "w_ih1", "w_hh0"} <= set(export_html.page_tensors(model))
    assert serve_info.palette(model.kind.sigmoid_gates)["display"]["sigmoid"] == ["squash"]


def test_the_options_that_name_cells_or_gates_name_every_one_the_registry_has(capsys):
    """config.CELL_TYPES is the names --help can list without torch; inspect-gates' --gate help
    lists the quantities. Both follow the registry, so a new cell cannot be left out of them."""
    _, train_help, _ = invoke(capsys, "train", "--help")
    _, inspect_help, _ = invoke(capsys, "inspect-gates", "--help")
    for name, kind in CELLS.items():
        assert name in CELL_TYPES and re.search(rf"\b{name}\b", train_help), name
        for quantity in kind.quantities:
            assert re.search(rf"\b{quantity}\b", inspect_help), f"{name}: --gate help lacks {quantity}"
