"""How often a run bounded by time alone evaluates: a fixed share of its budget at most.

An evaluation scores the same held-out characters whatever the budget, so at a fixed
`--eval-every` a short budget spends a large share of itself evaluating: twelve evaluations
of ~1 s took 14-16% of a 90 s run on a 2-core CPU, time the model did not train. A run
bounded by `--max-time` alone therefore evaluates every `eval_every` steps at most and no
more often than keeps its evaluations, the final one included, within `eval_share` of the
time spent so far. The first evaluation always comes (the run's first checkpoint and
figure); then they spread out evenly over the run, so best.pt is still chosen along the
way and the final figure is still the bounded split scored whole. `budget` reckons a
sized run's steps with the same rule.
"""

from __future__ import annotations

from charlstm.config import TrainConfig


def paced(config: TrainConfig) -> bool:
    """Whether `config`'s evaluations are paced: a time budget, no step budget, and a share
    under the whole budget (an `eval_share` of 1 evaluates every `eval_every` steps)."""
    return bool(config.max_time) and not config.max_steps and config.eval_share < 1


def within_share(evaluating: float, last_evaluation: float, spent: float, share: float) -> bool:
    """Whether one more evaluation, taking as long as the last, still leaves the seconds spent
    evaluating so far, it, and the final one within `share` of the `spent` seconds of budget."""
    return evaluating + 2 * last_evaluation <= share * spent
