"""Run folders: starting a run, resuming one, and what a run folder holds besides checkpoints.

A run lives in `checkpoints/<corpus>-<time>/`: last.pt and best.pt (checkpoint.py),
metrics.jsonl (the Trainer), and config.json, written here when the run starts, which
says in readable form what the run is (model, training settings, corpus and its hash,
parameters, processes, and what budget sizing measured). Policy about what a user's
options mean lives here too: which options ask for sizing, which may change on resume.

A run's setup is resolved here once, in the order it depends on: the device and this
process's rank (`place`), the data, then the shape and precision (`budget`), each handed
down to the `Trainer` and to sizing's probes, which resolve nothing again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from charlstm import budget, checkpoint, disk, distributed, history, token_cache
from charlstm.config import ModelConfig, TrainConfig, flag
from charlstm.data import Data, load_data
from charlstm.device import resolve_device, resolve_precision
from charlstm.errors import CharlstmError, SettingError, WriteFailed, named
from charlstm.model import parameter_count
from charlstm.tokenizer import Vocabulary
from charlstm.trainer import Placement, Trainer, TrainListener

# What `--resume` may change: how long and how visibly a run goes on, and where it computes,
# never the path its weights take (data, model, optimisation).
RESUMABLE_CHANGES = frozenset(
    {"max_steps", "max_time", "eval_every", "sample_every", "device", "val_chars", "final_val"}
)

# Options by which a user chooses the model's size or the batch themselves; with none of
# them (nor --init-from), a time-budgeted run is sized for its budget.
SHAPE_OPTIONS = frozenset({"layers", "hidden", "batch_size", "max_steps"})


def from_options(
    corpus: str | None,
    model_options: dict[str, Any],
    train_options: dict[str, Any],
    resume_from: str | None = None,
    init_from: str | None = None,
    root: Path = history.DEFAULT_ROOT,
    progress: token_cache.Progress | None = None,
) -> Trainer:
    """The run a user's options ask for: `resume_from` continues one, else a new run starts.

    The options are those the user gave (absent ones take config.py's defaults). A new run
    with no shape, batch or step budget chosen is sized for its time budget.
    """
    if resume_from is not None:
        if corpus is not None or model_options or init_from is not None:
            raise CharlstmError("--resume takes the corpus and model from the run; give only budget options with it")
        return resume(resume_from, train_options, progress)
    config = TrainConfig(corpus=corpus, **train_options)
    chosen = SHAPE_OPTIONS & (model_options.keys() | train_options.keys())
    return start(model_options, config, root, init_from, progress, size_for_budget=not chosen and init_from is None)


def run_to_end(trainer: Trainer, listener: TrainListener) -> dict[str, Any]:
    """Train `trainer` to its budget, `listener` hearing it on the main process; then close
    the listener and tear down a distributed run's process group. Returns the final metrics."""
    try:
        result = trainer.run(listener if trainer.ranks.main else None)
        # Ranks leave together: one tearing down its connections while a peer still finishes
        # its last collective aborted at exit once ('terminate called without an active exception').
        trainer.ranks.barrier()
    finally:
        listener.close()
        distributed.shutdown()
    return result


def new_run_dir(root: Path, corpus_name: str) -> Path:
    """A fresh folder `root/<corpus>-<time>`, numbered when two runs start in one second."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = root / f"{corpus_name}-{stamp}"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    try:
        run_dir.mkdir(parents=True)
    except OSError as e:
        raise SettingError(
            "checkpoints",
            f"cannot create run folder {run_dir}: {e.strerror}; choose another {named('checkpoints')}",
            usage=False,
        ) from e
    return run_dir


def start(
    model_options: dict[str, Any],
    config: TrainConfig,
    root: Path = history.DEFAULT_ROOT,
    init_from: str | None = None,
    progress: token_cache.Progress | None = None,
    size_for_budget: bool = False,
) -> Trainer:
    """A fresh run; with `init_from`, starting from that checkpoint's weights and vocabulary,
    the vocabulary grown by any characters the corpus has that it lacks (their rows fresh).

    With `size_for_budget`, the hidden size and batch are picked for the time budget by
    measuring this machine (`budget.size_for_budget`), when the run has a time budget and
    no step budget and runs in one process.
    """
    vocabulary, source_model = None, None
    if init_from is not None:
        source_model, vocabulary, _ = checkpoint.load_model(init_from)
        source_options = source_model.config.to_dict()
        conflicts = [k for k, v in model_options.items() if v != source_options[k]]
        if conflicts:
            raise CharlstmError(
                f"--init-from keeps the checkpoint's architecture, so "
                f"{', '.join(map(flag, conflicts))} cannot differ from it"
            )
        model_options = source_options
    placement = place(config, model_options.get("cell", ModelConfig.cell))
    ranks = placement.ranks
    data = _load_data_in_turn(ranks, config, vocabulary, progress, grow=vocabulary is not None)
    model_config = ModelConfig(**(model_options | {"vocab_size": len(data.vocabulary)}))
    sizing, precision_choice = None, None
    if size_for_budget and ranks.world == 1 and config.max_time and not config.max_steps:
        model_config, config, sizing = budget.size_for_budget(model_config, config, data, placement)
        precision_choice = sizing.precision
    elif ranks.world == 1:  # ranks of a distributed run could time differently and disagree
        config, precision_choice = budget.confirm_auto_precision(model_config, config, data, placement)
    if precision_choice is not None:
        placement = replace(placement, precision=precision_choice.chosen)
    run_dir = ranks.share(new_run_dir(root, data.name) if ranks.main else None)
    with _removed_unless_started(run_dir, ranks):
        trainer = Trainer(model_config, config, data, run_dir, placement, sizing, precision_choice)
        if source_model is not None:
            trainer.model.load_grown(source_model.state_dict(), data.grown_from)
        if ranks.main:
            write_run_config(trainer, init_from)
    return trainer


@contextmanager
def _removed_unless_started(run_dir: Path, ranks: distributed.Ranks) -> Iterator[None]:
    """A run refused after its folder was made (its text too short for its streams or for
    one validation window, config.json not written) has trained nothing: the folder made
    for it, still empty, is removed, so none is left that `charlstm runs` would not list.
    Only an empty folder is removed: never anything a user put there."""
    try:
        yield
    except BaseException as e:
        if not ranks.main:
            raise
        try:
            run_dir.rmdir()
            left = f"the empty run folder {run_dir} was removed"
        except OSError:
            left = f"the empty folder {run_dir} can go"
        if isinstance(e, WriteFailed):
            raise e.keeping(f"nothing was trained yet and {left}; free space and train again") from e
        raise


def write_run_config(trainer: Trainer, init_from: str | None = None) -> None:
    """config.json: what the run is, readable without charlstm (`WriteFailed` if it cannot
    be written)."""
    config = {
        "model": trainer.model.config.to_dict(),
        "train": asdict(trainer.config),
        "corpus": trainer.data.name,
        "corpus_sha256": trainer.data.sha256,
        "parameters": parameter_count(trainer.model),
        "init_from": init_from,
        "vocabulary_added": trainer.data.added,
        "processes": trainer.ranks.world,
        "sized_for_budget": trainer.sizing.to_dict() if trainer.sizing else None,
        "precision_choice": trainer.precision_choice.to_dict() if trainer.precision_choice else None,
        "validation": trainer.validation_scored(),
    }
    disk.write_json(trainer.run_dir / "config.json", config)


def resume(path: str, overrides: dict[str, Any], progress: token_cache.Progress | None = None) -> Trainer:
    """Continue the run at `path` (a run folder or a checkpoint file) exactly where it stopped.

    Budget options (RESUMABLE_CHANGES) may change on resume; anything that would change the
    data or the optimisation path may not.
    """
    source = Path(path)
    file = source / checkpoint.LAST if source.is_dir() else checkpoint.resolve(source)
    if not file.exists():
        raise CharlstmError(f"run folder {source} has no {checkpoint.LAST} to resume from")
    saved = checkpoint.load(file)
    if saved.resume is None or saved.train_config is None:
        raise CharlstmError(f"{file} holds weights only; use --init-from to start a new run from it")
    conflicts = [k for k, v in overrides.items() if k not in RESUMABLE_CHANGES and v != getattr(saved.train_config, k)]
    if conflicts:
        raise CharlstmError(
            f"--resume continues a run exactly, so {', '.join(map(flag, conflicts))} "
            "cannot change; start a new run with --init-from instead"
        )
    config = replace(saved.train_config, **{k: v for k, v in overrides.items() if k in RESUMABLE_CHANGES})
    placement = place(config, saved.model_config.cell)
    data = _load_data_in_turn(placement.ranks, config, saved.vocabulary, progress)
    trainer = Trainer(saved.model_config, config, data, file.parent, placement)
    trainer.restore(saved)
    if placement.ranks.main:
        disk.remove_stale_temporaries(file.parent)
    return trainer


def place(config: TrainConfig, cell: str = ModelConfig.cell) -> Placement:
    """Where this process computes, resolved once for the run: the device `config` names
    (under torchrun, this rank's GPU of it; joining the process group), and the precision
    for a `cell` model (`auto`: bf16 where the device computes it natively and the cell's
    kernels run in it, until a one-process run times both, `budget`; `bf16` where they do
    not run is refused in one line, before the run's folder is made)."""
    device = resolve_device(config.device)
    ranks = distributed.ranks(device)
    device = ranks.place(device)
    return Placement(device, resolve_precision(config.precision, device, cell), ranks)


def _load_data_in_turn(
    ranks: distributed.Ranks,
    config: TrainConfig,
    vocabulary: Vocabulary | None,
    progress: token_cache.Progress | None,
    grow: bool = False,
) -> Data:
    """Local rank 0 of each machine builds the token cache on that machine's disk; the other
    ranks wait for it, then map it. (Rank 0 alone would leave other machines' ranks to
    build theirs all at once. Where machines share one disk, each builds to a temporary
    file renamed into place whole, and none removes what another reads: token_cache.)"""
    data = load_data(config, vocabulary, progress if ranks.main else None, grow) if ranks.node_main else None
    ranks.barrier()
    return data or load_data(config, vocabulary, grow=grow)
