"""Training input: the update schedule, background loading, crops, loss weights, baselines and progress lines."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest
import torch

from gmptl.data import Utterances, class_weights, load_batch, majority_baseline
from gmptl.loader import Schedule, crop_rng, prefetched
from gmptl.progress import Progress, format_duration
from gmptl.settings import AudioSettings


def schedule(n=23, batch_size=4, grad_accum=2, seed=3) -> Schedule:
    return Schedule(np.linspace(1.0, 3.0, n), batch_size, grad_accum, seed)


def test_each_pass_uses_every_utterance_once_and_updates_accumulate_micro_batches():
    plan = schedule()
    assert plan.batches_per_pass == 6 and plan.updates_per_pass == 3
    micro = list(plan.micro_batches(0, plan.updates_per_pass))
    assert sorted(np.concatenate([m.index for m in micro]).tolist()) == list(range(23))
    assert [m.update for m in micro] == [0, 0, 1, 1, 2, 2]
    assert [m.last for m in micro] == [False, True] * 3 and {m.in_update for m in micro} == {2}


def test_the_last_update_of_a_pass_takes_what_is_left():
    plan = schedule(n=20, batch_size=4, grad_accum=2)  # 5 micro-batches per pass: updates of 2, 2, 1
    micro = list(plan.micro_batches(0, 4))
    assert [(m.update, m.pass_, m.batch, m.in_update) for m in micro] == [
        (0, 1, 0, 2),
        (0, 1, 1, 2),
        (1, 1, 2, 2),
        (1, 1, 3, 2),
        (2, 1, 4, 1),
        (3, 2, 0, 2),
        (3, 2, 1, 2),
    ]


def test_steps_beyond_one_pass_cycle_through_reshuffled_passes():
    plan = schedule()
    micro = list(plan.micro_batches(0, 7))  # passes 1, 2 and the first update of pass 3
    passes = [m.pass_ for m in micro]
    assert passes == [1] * 6 + [2] * 6 + [3] * 2
    first, second = [np.concatenate([m.index for m in micro if m.pass_ == p]) for p in (1, 2)]
    assert sorted(second.tolist()) == list(range(23)) and not np.array_equal(first, second)


def test_the_schedule_from_any_update_is_the_tail_of_the_whole_schedule():
    whole = [(m.update, m.pass_, m.batch, m.index.tolist()) for m in schedule().micro_batches(0, 10)]
    tail = [(m.update, m.pass_, m.batch, m.index.tolist()) for m in schedule().micro_batches(4, 10)]
    assert tail == [item for item in whole if item[0] >= 4]


def test_prefetched_keeps_the_order_whatever_the_threads():
    def load(job):
        time.sleep(0.001 * (job % 3))
        return job * job

    expected = [(job, job * job) for job in range(20)]
    assert list(prefetched(range(20), load, 0)) == expected
    assert list(prefetched(range(20), load, 3)) == expected


def test_prefetched_loads_ahead_in_other_threads():
    """4 workers load 4 jobs at once: every load waits at a barrier for 3 others, which only concurrent loading
    can pass (the timeout guards a hang and is many times what the test needs; no wall-clock speed is asserted)."""
    threads = set()
    together = threading.Barrier(4, timeout=60)

    def load(job):
        threads.add(threading.get_ident())
        try:
            together.wait()
        except threading.BrokenBarrierError:
            raise AssertionError("prefetched did not run 4 loads at once (a 60 s hang guard fired)") from None
        return job

    assert [job for job, _ in prefetched(range(8), load, 4)] == list(range(8))
    assert threading.get_ident() not in threads and len(threads) >= 4


def test_a_loading_error_is_raised_at_its_turn():
    def load(job):
        if job == 2:
            raise ValueError("bad audio 2")
        return job

    seen = []
    with pytest.raises(ValueError, match="bad audio 2"):
        for job, _ in prefetched(range(6), load, 2):
            seen.append(job)
    assert seen == [0, 1]


def test_crops_are_a_function_of_seed_pass_and_batch(tmp_path):
    import soundfile as sf

    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"u{i}.wav"))
        sf.write(paths[-1], np.random.default_rng(i).standard_normal(16000).astype(np.float32) * 0.1, 16000)
    data = Utterances([f"u{i}" for i in range(3)], paths, np.zeros(3, np.int64), np.zeros(3, np.int64), np.ones(3))
    audio = AudioSettings(16000, "error")

    def crop(pass_, batch):
        return load_batch(data, np.arange(3), audio, max_samples=3200, hop=320, rng=crop_rng(7, pass_, batch)).waves

    assert torch.equal(crop(1, 0), crop(1, 0)) and crop(1, 0).shape == (3, 3200)
    assert not torch.equal(crop(1, 0), crop(1, 1)) and not torch.equal(crop(1, 0), crop(2, 0))
    memory = {i: np.asarray(sf.read(p, dtype="float32")[0]) for i, p in enumerate(paths)}
    held = load_batch(data, np.arange(3), audio, max_samples=3200, hop=320, rng=crop_rng(7, 1, 0), read=memory.get)
    assert torch.equal(held.waves, crop(1, 0))


def test_balanced_class_weights_follow_scikit_learn():
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.array([0, 0, 0, 1, 2, 2, 0, 1])
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    np.testing.assert_allclose(class_weights(labels, 3), expected)
    np.testing.assert_allclose(class_weights(np.array([0, 0, 2]), 4), [0.75, 0.0, 1.5, 0.0])


def test_majority_baseline_uses_the_training_majority_on_validation_frames():
    train = [np.array([3, 3, 1]), np.array([3, 2])]
    valid = [np.array([3, 1, 1, 1])]
    assert majority_baseline(train, valid) == (3, 0.25)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_progress_logs_at_most_every_interval_with_rate_and_eta(caplog):
    clock = FakeClock()
    progress = Progress("stage1 fold 1", total=100, done=20, every_s=60, clock=clock, bar=False)
    with caplog.at_level(logging.INFO, logger="gmptl.progress"):
        for _ in range(10):
            clock.now += 25
            progress.advance(1, audio_s=50.0, loss=2.5)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3  # at 75, 150 and 225 s
    assert lines[0] == (
        "stage1 fold 1: step 23/100 (23.0 %) | loss 2.5 | 2 audio-s/s | elapsed 0:01:15 | ETA 0:32:05"
    )  # 3 steps in 75 s: 77 steps left take 1925 s


def test_progress_report_logs_now_with_its_fields(caplog):
    clock = FakeClock()
    progress = Progress("mtl fold 2", total=10, every_s=3600, clock=clock, bar=False)
    with caplog.at_level(logging.INFO, logger="gmptl.progress"):
        clock.now += 30
        progress.advance(2)
        progress.report(round="1/5", valid_uar=0.5)
        progress.advance(1)
    assert [r.getMessage() for r in caplog.records] == [
        "mtl fold 2: step 2/10 (20.0 %) | round 1/5 | valid_uar 0.5 | elapsed 0:00:30 | ETA 0:02:00"
    ]


def test_durations_read_as_hours_minutes_seconds():
    assert format_duration(3725.4) == "1:02:05" and format_duration(90000) == "1d 1:00:00"
