"""The test helpers themselves: the text they make and the state they keep."""

from __future__ import annotations

import torch

from tests.helpers import ENGLISH_CHARACTERS, TINY_MODEL, english_text, torch_settings_kept, train_args


def test_english_text_is_the_same_plain_prose_every_time():
    text = english_text(20_000)
    assert text == english_text(20_000) and 19_000 < len(text) <= 20_001
    assert text.isascii() and text.count(" the ") > 100, "plain prose, not code"
    assert set(english_text(60_000)) >= ENGLISH_CHARACTERS, "the conftest corpus holds every letter and digit"


def test_train_args_is_the_command_line_it_names():
    args = train_args("c.txt", "runs", "--cell", "gru", steps=6, eval_every=3)
    assert args[:2] == ["train", "c.txt"] and args[-len(TINY_MODEL) :] == TINY_MODEL
    options = dict(zip(args[2 : -len(TINY_MODEL) : 2], args[3 : -len(TINY_MODEL) : 2], strict=True))
    assert options == {
        "--max-steps": "6",
        "--max-time": "0",
        "--precision": "fp32",
        "--eval-every": "3",
        "--sample-every": "0",
        "--checkpoints": "runs",
        "--cell": "gru",
    }
    assert "fp32" not in train_args("c.txt", "runs", "--precision", "bf16", steps=6)


def test_torch_settings_changed_inside_are_put_back():
    def settings():
        backends = torch.backends
        return (
            backends.cuda.matmul.allow_tf32,
            backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision(),
            torch.get_num_threads(),
            torch.get_default_dtype(),
            torch.are_deterministic_algorithms_enabled(),
            torch.get_rng_state(),
        )

    before = settings()
    with torch_settings_kept():
        torch.backends.cuda.matmul.allow_tf32 = not before[0]
        torch.backends.cudnn.allow_tf32 = not before[1]
        torch.set_num_threads(before[3] + 1)
        torch.set_default_dtype(torch.float64)
        torch.use_deterministic_algorithms(True)
        torch.manual_seed(5)
        torch.rand(3)
        assert settings()[:6] != before[:6]
    after = settings()
    assert after[:6] == before[:6] and torch.equal(after[6], before[6])
