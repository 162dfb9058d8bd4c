"""The wall-clock budget (``callbacks.time_budget``): stops on time, stretches the schedule over it,
leaves evaluation and compilation out of the clock, evaluates at fixed training-time intervals."""

import json

import pytest
from composer.core import Callback

from mosaicbert.config import load_config
from mosaicbert.errors import RecipeError
from mosaicbert.training.time_budget import TimeBudget
from mosaicbert.training.trainer import build_pretraining_trainer

from test_train import DEMO, tiny_overrides


class FakeTime(Callback):
    """A clock that moves only when this callback says: ``step`` seconds per batch, ``compile`` more
    (and one more compiled graph) on the batches in ``compile_at``, ``eval`` seconds per evaluation."""

    def __init__(self, step=0.5, compile=5.0, compile_at=(1,), eval=2.0):
        self.now, self.graphs = 100.0, 0
        self.step, self.compile, self.compile_at, self.eval = step, compile, compile_at, eval
        self.evals_at: list[int] = []

    def batch_start(self, state, logger):
        self.now += self.step
        if int(state.timestamp.batch) + 1 in self.compile_at:
            self.now += self.compile
            self.graphs += 1

    def eval_start(self, state, logger):
        self.now += self.eval
        self.evals_at.append(int(state.timestamp.batch))


def budget_trainer(tiny_mds, tmp_path, fake: FakeTime, *extra: str):
    overrides = tiny_overrides(tiny_mds, str(tmp_path), eval_subset_num_batches=1,
                               max_duration="1000ba", eval_interval="1000ba")
    cfg = load_config(DEMO, overrides + ["save_folder=null", "callbacks.time_budget.train_seconds=10",
                                         "callbacks.time_budget.eval_every_seconds=3", *extra])
    trainer = build_pretraining_trainer(cfg)
    budget = next(c for c in trainer.state.callbacks if isinstance(c, TimeBudget))
    budget.clock, budget.graph_count = (lambda: fake.now), (lambda: fake.graphs)
    trainer.state.callbacks.append(fake)
    return trainer, budget


def test_stops_on_the_training_clock_and_stretches_the_schedule_over_it(tiny_mds, tmp_path):
    fake = FakeTime()
    trainer, budget = budget_trainer(tiny_mds, tmp_path, fake)
    peak_lr = trainer.state.optimizers[0].param_groups[0]["initial_lr"]
    trainer.fit()

    # 0.5 s per batch and a 10 s budget: 20 batches. Batch 1 compiled (5 s extra) and is charged
    # the median batch time; the 2 s of each evaluation are not training time either.
    assert int(trainer.state.timestamp.batch) == 20
    assert budget.elapsed == pytest.approx(10.0)
    assert budget.compile_batches == 1 and budget.compile_seconds == pytest.approx(5.5)
    # Evaluation each time the clock passes 3, 6, 9 s (batches 6, 12, 18) and once at the end.
    assert fake.evals_at == [6, 12, 18, 20]
    assert budget.eval_seconds == pytest.approx(8.0)

    # The schedule (6% warm-up, linear decay to 2%) ran over the 20 batches, not over the 1000-batch
    # upper bound, where batch 20 would still be warming up at a third of the peak.
    final_lr = trainer.state.optimizers[0].param_groups[0]["lr"]
    assert final_lr < 0.1 * peak_lr

    # The clock is in the metrics log next to the eval metrics, for plots against training time.
    trainer.close()
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    clock = {r["step"]: r["time/train_seconds"] for r in rows if "time/train_seconds" in r}
    evals = [r["step"] for r in rows if "metrics/eval/LanguageCrossEntropy" in r]
    assert [clock[s] for s in evals] == pytest.approx([3.0, 6.0, 9.0, 10.0])


@pytest.mark.parametrize("bound", ["5ba", "40sp"])  # 8 samples per batch
def test_the_recipe_max_duration_stays_an_upper_bound(tiny_mds, tmp_path, bound):
    fake = FakeTime()
    trainer, budget = budget_trainer(tiny_mds, tmp_path, fake, f"max_duration={bound}")
    trainer.fit()
    assert int(trainer.state.timestamp.batch) == 5
    assert budget.elapsed == pytest.approx(2.5)
    trainer.close()


@pytest.mark.parametrize("value", ["-1", "0", "abc"])
def test_a_bad_budget_is_a_recipe_error(tiny_mds, tmp_path, value):
    overrides = tiny_overrides(tiny_mds, str(tmp_path)) + [f"callbacks.time_budget.train_seconds={value}"]
    with pytest.raises(RecipeError, match="train_seconds"):
        load_config(DEMO, overrides)


def test_eval_every_seconds_must_be_positive(tiny_mds, tmp_path):
    overrides = tiny_overrides(tiny_mds, str(tmp_path)) + ["callbacks.time_budget.train_seconds=5",
                                                           "callbacks.time_budget.eval_every_seconds=0"]
    with pytest.raises(RecipeError, match="eval_every_seconds"):
        load_config(DEMO, overrides)


def test_an_epoch_upper_bound_stops_at_the_end_of_the_epoch(tiny_mds, tmp_path):
    fake = FakeTime()
    trainer, _ = budget_trainer(tiny_mds, tmp_path, fake, "max_duration=1ep",
                                     "callbacks.time_budget.train_seconds=1000",
                                     "train_loader.split=train_small")  # 200 samples: 25 batches of 8
    trainer.fit()
    assert int(trainer.state.timestamp.batch) == 25 == trainer.state.dataloader_len
    trainer.close()


def test_every_evaluator_gets_the_same_answer_at_a_batch(tiny_mds, tmp_path):
    from composer.core import Event

    trainer, budget = budget_trainer(tiny_mds, tmp_path, FakeTime())
    state = trainer.state

    def answers(elapsed: float) -> list[bool]:
        """The three evaluators' answers at the next batch, with the clock at ``elapsed``."""
        state.timestamp = state.timestamp.to_next_batch(samples=8, tokens=256)
        budget.elapsed = elapsed
        return [budget.eval_due(state, Event.BATCH_END) for _ in range(3)]

    assert answers(2.0) == [False] * 3  # before the first 3 s mark
    assert answers(3.5) == [True] * 3  # past it: every evaluator, not only the first to ask
    assert answers(3.6) == [False] * 3  # the next batch: the mark is used up
    assert answers(6.2) == [True] * 3  # the next mark
    trainer.close()


class LearningRates(Callback):
    """The learning rate each batch trains with, by batch number (1-based)."""

    def __init__(self):
        self.by_batch: dict[int, float] = {}

    def batch_start(self, state, logger):
        self.by_batch[int(state.timestamp.batch) + 1] = state.optimizers[0].param_groups[0]["lr"]


def test_a_resumed_run_spends_only_what_is_left_of_the_budget(tiny_mds, tmp_path):
    from test_train import CrashAt

    saving = ["save_folder=" + str(tmp_path / "ckpt"), "save_interval=4ba"]
    full_fake, part_fake, resumed_fake = FakeTime(), FakeTime(), FakeTime()
    full_lrs, resumed_lrs = LearningRates(), LearningRates()
    full, _ = budget_trainer(tiny_mds, tmp_path / "full", full_fake)
    full.state.callbacks.append(full_lrs)
    full.fit()
    full.close()

    part, _ = budget_trainer(tiny_mds, tmp_path / "part", part_fake, *saving)
    part.state.callbacks.append(CrashAt(9))  # dies after the batch-8 checkpoint
    with pytest.raises(KeyboardInterrupt):
        part.fit()
    part.close()

    resumed, budget = budget_trainer(tiny_mds, tmp_path / "resumed", resumed_fake,
                                     "load_path=" + str(tmp_path / "ckpt" / "ep0-ba8-rank0.pt"))
    assert budget.resumed_seconds == pytest.approx(4.0)  # 8 batches of 0.5 s (batch 1's compile left out)
    resumed.state.callbacks.append(resumed_lrs)
    resumed.fit()
    # The schedule stretches over the saved estimate from the first resumed batch on, not over the
    # recipe's upper bound (1000 batches) until the estimate is made again.
    assert sorted(resumed_lrs.by_batch) == list(range(9, 21))
    for batch, lr in resumed_lrs.by_batch.items():
        assert lr == pytest.approx(full_lrs.by_batch[batch], rel=1e-6), batch
    # The same 20 batches and evaluations as the uninterrupted run, not 8 + another full budget.
    assert int(resumed.state.timestamp.batch) == int(full.state.timestamp.batch) == 20
    assert budget.elapsed == pytest.approx(10.0)
    assert resumed_fake.evals_at == [12, 18, 20] and full_fake.evals_at == [6, 12, 18, 20]
    resumed.close()
