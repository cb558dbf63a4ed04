"""One training loop for every stage: by updates or epochs, validation rounds, best-checkpoint selection, resume.

Length (`TrainSettings`): `steps` optimiser updates (passes over the training split repeat, each
reshuffled) or `epochs` passes. A validation round comes every `valid_every_steps` updates, else at the
end of each pass, and after the last update; each round is one row of the history (`round` 1, 2 …), and
the best round's weights are kept (validation UAR for emotion stages, validation loss for stage 1).

What a batch is scored by lives in `gmptl.objectives`, a validation round in `gmptl.validation`.
Each update and validation round also goes to TensorBoard event files (`gmptl.events`) when a folder is
given and `runtime.tensorboard` is on; they are flushed before every save and cut back to the saved update
when a run resumes.

Resume: a `Checkpointer` (`gmptl.checkpoint`) owns the full state — model, optimiser, scheduler,
gradient scaler, torch RNG and the loop state (update counter, running training loss, history, best so
far) — and writes it atomically to `state_dir/state.pt` after every validation round and, between
rounds, at least every `runtime.checkpoint_minutes` (at an update boundary), with a fingerprint of the
inputs, parameters and library code. A rerun with the same fingerprint continues at the saved update;
with another fingerprint it starts fresh and says which part changed. Which utterances, crops and masks
an update sees is a pure function of (seed, update) (`gmptl.loader`), so a resumed run ends with the
same weights as an uninterrupted one (on the same device), whatever the number of loader threads.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .checkpoint import Checkpointer, TorchRng
from .data import Batch, Utterances, balanced_weights, load_batch
from .errors import TrainingError
from .events import NoEventLog, gmp_charts, open_event_log, round_scalars, update_scalars
from .loader import MicroBatch, Schedule, crop_rng, mask_rng, prefetched
from .model import GmptlModel
from .objectives import emotion_loss_weights, forward_batch
from .progress import Progress
from .runtime import autocast
from .settings import AudioSettings, RuntimeSettings, SpecAugment, TrainSettings
from .stages import StageSpec
from .validation import majority_columns, validate

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    history: pd.DataFrame
    best_round: int
    best: dict
    best_step: int = 0


@dataclass
class LoopState:
    """What changes while training and is saved for resuming (besides model, optimiser, scheduler, RNG)."""

    step: int = 0  # optimiser updates done
    history: list[dict] = field(default_factory=list)  # one row per validation round
    best: dict | None = None
    best_round: int = 0
    best_step: int = 0
    best_weights: dict | None = None
    loss_sum: float = 0.0  # training loss × utterances since the last validation round
    loss_count: int = 0

    def state_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def load_state_dict(self, state: dict) -> None:
        for f in fields(self):
            setattr(self, f.name, state[f.name])


@dataclass
class Optimisation:
    """The optimiser, its schedule and the update plan of one run."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    schedule: Schedule  # which utterances each update sees
    total: int  # updates to train
    every: int  # updates between validation rounds
    max_grad_norm: float

    @property
    def rounds(self) -> int:
        return math.ceil(self.total / self.every)


@dataclass
class Objective:
    """What a training batch is scored by: the stage, its emotion class weights, SpecAugment (or None)."""

    spec: StageSpec
    emotion_weights: torch.Tensor | None
    augment: SpecAugment | None


def make_optimizer(model: GmptlModel, cfg: TrainSettings) -> torch.optim.Optimizer:
    """AdamW with one learning rate for the backbone and one for the heads."""
    groups = [
        {"params": [p for p in model.backbone_parameters() if p.requires_grad], "lr": cfg.lr, "name": "backbone"},
        {"params": [p for p in model.head_parameters() if p.requires_grad], "lr": cfg.head_lr, "name": "heads"},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg.weight_decay)


def make_scheduler(optimizer, total_steps: int, warmup_fraction: float):
    """Linear warm-up to the peak rate, then linear decay to zero."""
    warmup = max(1, int(round(warmup_fraction * total_steps)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimisation(
    model: GmptlModel, train_data: Utterances, cfg: TrainSettings, device: torch.device, precision: str, seed: int
) -> Optimisation:
    optimizer = make_optimizer(model, cfg)
    weights = balanced_weights(train_data.emotion) if cfg.balanced_sampling else None
    schedule = Schedule(train_data.durations, cfg.batch_size, cfg.grad_accum, seed, weights)
    total = cfg.steps or cfg.epochs * schedule.updates_per_pass
    return Optimisation(
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, total, cfg.warmup_fraction),
        scaler=torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and precision == "fp16"),
        schedule=schedule,
        total=total,
        every=cfg.valid_every_steps or schedule.updates_per_pass,
        max_grad_norm=cfg.max_grad_norm,
    )


def make_checkpointer(
    state_dir: str | Path, fingerprint: dict, model: GmptlModel, opt: Optimisation, loop: LoopState, device
) -> Checkpointer:
    """The run's resume state: model, optimiser, scheduler, scaler, torch RNG and loop state."""
    checkpointer = Checkpointer(state_dir, fingerprint)
    for name, obj in [
        ("model", model),
        ("optimizer", opt.optimizer),
        ("scheduler", opt.scheduler),
        ("scaler", opt.scaler),
        ("rng", TorchRng(device)),
        ("loop", loop),
    ]:
        checkpointer.register(name, obj)
    return checkpointer


def _snapshot(model: GmptlModel) -> dict:
    return copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})


def _update(model: GmptlModel, opt: Optimisation) -> None:
    """One optimiser update from the accumulated gradients (unscaled first when a gradient scaler is on)."""
    opt.scaler.unscale_(opt.optimizer)
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], opt.max_grad_norm)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.scheduler.step()
    opt.optimizer.zero_grad(set_to_none=True)


@dataclass
class Run:
    """The parts of one training run, built once by `train_stage` and shared by the steps of its loop."""

    model: GmptlModel
    objective: Objective
    opt: Optimisation
    loop: LoopState
    checkpointer: Checkpointer
    progress: Progress
    runtime: RuntimeSettings
    device: torch.device
    seed: int
    clock: Callable[[], float]
    events: NoEventLog  # TensorBoard scalars (`gmptl.events`)


@dataclass
class UpdateLosses:
    """The losses of the update being accumulated, summed over its utterances: `loss` and each objective's."""

    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0

    def add(self, losses: dict[str, float], utterances: int) -> None:
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0.0) + value * utterances
        self.count += utterances

    def means(self) -> dict[str, float]:
        return {name: total / self.count for name, total in self.sums.items()}


def _backward(run: Run, micro: MicroBatch, batch: Batch) -> dict[str, float]:
    """Forward and backward of one micro-batch; its `loss` and each objective's. A non-finite loss is a
    TrainingError."""
    spec = run.objective.spec
    with autocast(run.device, run.runtime.precision):
        loss, out = forward_batch(
            run.model,
            spec,
            batch,
            run.device,
            mask_rng(run.seed, micro.pass_, micro.batch),
            emotion_weights=run.objective.emotion_weights,
            augment=run.objective.augment,
        )
    if not torch.isfinite(loss):
        raise TrainingError(
            f"{spec.name}: the loss became {float(loss.detach())} at step {micro.update + 1} (pass {micro.pass_}); "
            "lower train.lr (or check the audio for silence/clipping)"
        )
    run.opt.scaler.scale(loss / micro.in_update).backward()
    names = ["loss", *out["losses"]]
    values = torch.stack([loss.detach().float()] + [term.detach().float() for term in out["losses"].values()])
    return dict(zip(names, values.tolist(), strict=True))  # one device sync for all of them


def _round_row(loop: LoopState, opt: Optimisation) -> dict:
    """The start of a validation round's history row: where training stands."""
    return {
        "round": len(loop.history) + 1,
        "step": loop.step,
        "passes": round(loop.step / opt.schedule.updates_per_pass, 3),
        "train_loss": loop.loss_sum / loop.loss_count,
        "lr": float(opt.scheduler.get_last_lr()[0]),
    }


def _validation_round(run: Run, evaluate: Callable[[], dict], began: float) -> None:
    """Validate (when there is a validation split), add the round to the history, keep the best weights, log it."""
    loop, spec = run.loop, run.objective.spec
    row = _round_row(loop, run.opt)
    scores = evaluate()
    row.update(scores)
    row["seconds"] = round(run.clock() - began, 2)
    loop.history.append(row)
    run.events.scalars(row["step"], round_scalars(row))
    loop.loss_sum, loop.loss_count = 0.0, 0
    if not scores or spec.improved(row, loop.best):
        loop.best, loop.best_round, loop.best_step = row, row["round"], row["step"]
        loop.best_weights = _snapshot(run.model)
    run.progress.report(
        round=f"{row['round']}/{run.opt.rounds}",
        **{k: v for k, v in row.items() if k not in ("round", "step", "passes")},
        best_round=loop.best_round,
    )


def _train_loop(run: Run, batches: Iterator[tuple[MicroBatch, Batch]], evaluate: Callable[[], dict], rate: int):
    """Updates from `loop.step` to `opt.total`: a validation round and a save every `opt.every` updates (and after
    the last), a save between rounds every `runtime.checkpoint_minutes`. `rate`: audio samples per second."""
    loop, opt = run.loop, run.opt
    last_save = round_began = run.clock()
    audio_s, losses = 0.0, UpdateLosses()
    run.model.train()
    opt.optimizer.zero_grad(set_to_none=True)
    for micro, batch in batches:
        micro_losses = _backward(run, micro, batch)
        losses.add(micro_losses, len(micro.index))
        loop.loss_sum += micro_losses["loss"] * len(micro.index)
        loop.loss_count += len(micro.index)
        audio_s += float(batch.lengths.sum()) / rate
        if not micro.last:
            continue
        rates = learning_rates(opt.optimizer)
        _update(run.model, opt)
        loop.step += 1
        run.events.scalars(loop.step, update_scalars(losses.means(), rates))
        run.progress.advance(1, audio_s=audio_s, loss=loop.loss_sum / loop.loss_count, **{"pass": micro.pass_})
        audio_s, losses = 0.0, UpdateLosses()
        if loop.step % opt.every == 0 or loop.step == opt.total:
            _validation_round(run, evaluate, round_began)
            _save(run)
            last_save = round_began = run.clock()
        elif run.clock() - last_save >= run.runtime.checkpoint_minutes * 60:
            _save(run)
            last_save = run.clock()


def _save(run: Run) -> None:
    """Save the resume state, the events up to it flushed first (a resumed run continues after them)."""
    run.events.flush()
    run.checkpointer.save()


def learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The current rate of each parameter group, by its name (`backbone`, `heads`)."""
    return {group.get("name", str(i)): float(group["lr"]) for i, group in enumerate(optimizer.param_groups)}


def _log_plan(label: str, opt: Optimisation, cfg: TrainSettings, n_train: int, baselines: dict) -> None:
    log.info(
        "%s: %d updates of %d × %d utterances (%.1f passes over %d), validation every %d updates%s",
        label,
        opt.total,
        cfg.grad_accum,
        cfg.batch_size,
        opt.total / opt.schedule.updates_per_pass,
        n_train,
        opt.every,
        f"; majority baselines {baselines}" if baselines else "",
    )


def _event_log(folder: str | Path | None, resumed_at: int | None, spec: StageSpec, valid_data) -> NoEventLog:
    """The run's event log (none without a folder), continued at update `resumed_at` (None: a fresh start), with
    one chart per GMP head when the run validates."""
    events = open_event_log(folder, resumed_at)
    if resumed_at is None and spec.gmp_weights and valid_data is not None:
        events.charts(gmp_charts(list(spec.gmp_weights), masked=spec.mask_prob > 0))
    return events


def train_stage(
    model: GmptlModel,
    spec: StageSpec,
    train_data: Utterances,
    valid_data: Utterances | None,
    cfg: TrainSettings,
    *,
    classes: list[str],
    device: torch.device,
    audio: AudioSettings,
    seed: int,
    state_dir: str | Path,
    fingerprint: dict,
    runtime: RuntimeSettings | None = None,
    label: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    read: Callable[[int], np.ndarray] | None = None,
    events_dir: str | Path | None = None,
) -> TrainResult:
    """Train `model` for `cfg.steps` updates (or `cfg.epochs` passes); load the best (or last) weights into it.

    `runtime` gives precision, evaluation batch size, checkpoint and log intervals and loader threads;
    `label` names the job in progress lines; `clock` (seconds) times checkpoints and progress;
    `read(i)` gives training utterance i's samples (default: decoded from its file by the loader threads);
    `events_dir` receives TensorBoard event files (`gmptl.events`) unless `runtime.tensorboard` is off.
    """
    runtime, label = runtime or RuntimeSettings(), label or spec.name
    if not len(train_data):
        raise TrainingError(f"{spec.name}: the training split holds no utterances")
    valid_data = valid_data if valid_data is not None and len(valid_data) else None
    model.to(device)
    if cfg.freeze_feature_encoder:
        model.encoder.freeze_feature_encoder()
    opt = make_optimisation(model, train_data, cfg, device, runtime.precision, seed)
    loop = LoopState()
    checkpointer = make_checkpointer(state_dir, fingerprint, model, opt, loop, device)
    resumed = checkpointer.restore()
    if resumed:
        log.info(
            "resuming %s from %s at step %d/%d (after round %d)",
            spec.name, state_dir, loop.step, opt.total, len(loop.history),
        )  # fmt: skip
    baselines = majority_columns(spec, train_data, valid_data)
    _log_plan(label, opt, cfg, len(train_data), baselines)
    augment = cfg.augment if not spec.gmp_weights else None
    objective = Objective(spec, emotion_loss_weights(cfg, spec, train_data, classes, device), augment)
    max_samples, hop = int(cfg.max_crop_s * audio.sample_rate), model.encoder.frame_hop

    def load(micro: MicroBatch) -> Batch:
        rng = crop_rng(seed, micro.pass_, micro.batch)
        return load_batch(train_data, micro.index, audio, max_samples=max_samples, hop=hop, rng=rng, read=read)

    def evaluate() -> dict:
        """One validation round's scores and the majority baselines; {} without a validation split."""
        if valid_data is None:
            return {}
        scores = validate(
            model, spec, valid_data, classes, device, audio,
            runtime.eval_batch_seconds, runtime.precision, seed, objective.emotion_weights,
        )  # fmt: skip
        model.train()
        return {**scores, **baselines}

    progress = Progress(label, opt.total, done=loop.step, every_s=runtime.log_every_s, clock=clock)
    events = _event_log(events_dir if runtime.tensorboard else None, loop.step if resumed else None, spec, valid_data)
    run = Run(model, objective, opt, loop, checkpointer, progress, runtime, device, seed, clock, events)
    batches = prefetched(opt.schedule.micro_batches(loop.step, opt.total), load, runtime.loader_workers)
    try:
        _train_loop(run, batches, evaluate, audio.sample_rate)
    finally:
        batches.close()
        events.close()
    progress.close()
    model.load_state_dict(loop.best_weights)
    return TrainResult(pd.DataFrame(loop.history), loop.best_round, loop.best, loop.best_step)
