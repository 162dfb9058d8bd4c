"""Metrics against hand-computed values, torchmetrics agreement, GLUE averaging, seed summaries."""

import math

import numpy as np
import pytest
import torch

from mosaicbert.finetune.metrics import GLUE_SCORE_METRICS, build_torchmetrics, glue_score, mean_over_seeds, result_key
from mosaicbert.finetune.tasks import GLUE_TASKS, TaskSpec
from reference_metrics import (
    accuracy,
    average_ranks,
    compute_metrics,
    compute_task_metrics,
    f1,
    matthews_corrcoef,
    pearson,
    spearman,
)

# Binary example. labels: four positives then six negatives; predictions get 3 of the 4 positives and
# call one negative positive. Confusion matrix (rows = true, columns = predicted):
#              pred 1  pred 0
#   true 1     TP = 3  FN = 1
#   true 0     FP = 1  TN = 5
# accuracy = (3 + 5) / 10                       = 0.8
# F1       = 2*3 / (2*3 + 1 + 1) = 6/8          = 0.75
# MCC      = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))
#          = (15 - 1) / sqrt(4 * 4 * 6 * 6) = 14/24 = 0.583333...
BIN_LABELS = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
BIN_PREDS = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]

# Three-class example. labels [0,0,1,1,2,2], predictions [0,1,1,1,2,0]:
#   confusion C = [[1,1,0],[0,2,0],[1,0,1]]  (rows = true)
#   true counts t = [2,2,2], predicted counts p = [2,3,1], correct c = 4, total s = 6
#   MCC = (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) = (24 - 12) / sqrt((36 - 14)(36 - 12))
#       = 12 / sqrt(528) = 0.522232...
MC_LABELS = [0, 0, 1, 1, 2, 2]
MC_PREDS = [0, 1, 1, 1, 2, 0]

# Correlation example with ties in y. x = [1,2,3,4,5], y = [2,4,5,4,5]
# Pearson: dx = [-2,-1,0,1,2], dy = [-2,0,1,0,1]; sum dx*dy = 6, sum dx^2 = 10, sum dy^2 = 6
#          r = 6 / sqrt(60) = 0.774596...
# Spearman: ranks(x) = [1,2,3,4,5]; y sorted 2 | 4,4 | 5,5 -> ranks 1 | 2.5,2.5 | 4.5,4.5
#          ranks(y) = [1,2.5,4.5,2.5,4.5], mean 3, dy = [-2,-0.5,1.5,-0.5,1.5]
#          sum dx*dy = 4 + 0.5 + 0 - 0.5 + 3 = 7, sum dy^2 = 9; rho = 7 / sqrt(90) = 0.737864...
CORR_X = [1.0, 2.0, 3.0, 4.0, 5.0]
CORR_Y = [2.0, 4.0, 5.0, 4.0, 5.0]


def test_binary_metrics_by_hand():
    assert accuracy(BIN_PREDS, BIN_LABELS) == pytest.approx(0.8)
    assert f1(BIN_PREDS, BIN_LABELS) == pytest.approx(0.75)
    assert matthews_corrcoef(BIN_PREDS, BIN_LABELS) == pytest.approx(14 / 24)


def test_multiclass_matthews_by_hand():
    assert matthews_corrcoef(MC_PREDS, MC_LABELS) == pytest.approx(12 / math.sqrt(528))


def test_degenerate_cases_are_zero_not_nan():
    # One predicted class: MCC undefined -> 0.0; no positive predictions or labels: F1 -> 0.0.
    assert matthews_corrcoef([0, 0, 0, 0], [0, 1, 0, 1]) == 0.0
    assert f1([0, 0, 0], [0, 0, 0]) == 0.0
    assert pearson([1.0, 1.0, 1.0], [0.1, 0.5, 0.9]) == 0.0
    assert matthews_corrcoef([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)


def test_correlations_by_hand_with_ties():
    assert average_ranks(CORR_Y).tolist() == [1.0, 2.5, 4.5, 2.5, 4.5]
    assert pearson(CORR_X, CORR_Y) == pytest.approx(6 / math.sqrt(60))
    assert spearman(CORR_X, CORR_Y) == pytest.approx(7 / math.sqrt(90))
    # Spearman is invariant to monotone transforms; Pearson is not.
    assert spearman(np.exp(CORR_X), CORR_Y) == pytest.approx(7 / math.sqrt(90))


def test_length_mismatch_and_empty_inputs_raise():
    with pytest.raises(ValueError, match="differ in length"):
        accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="at least one"):
        accuracy([], [])


def test_compute_metrics_takes_logits_and_regression_columns():
    qqp = GLUE_TASKS["qqp"]
    logits = np.array([[0.1, 0.9] if p == 1 else [2.0, -1.0] for p in BIN_PREDS])
    assert compute_metrics(qqp, logits, BIN_LABELS) == pytest.approx({"accuracy": 0.8, "f1": 0.75})
    stsb = GLUE_TASKS["stsb"]
    out = compute_metrics(stsb, np.array(CORR_X)[:, None], CORR_Y)
    assert out == pytest.approx({"pearson": 6 / math.sqrt(60), "spearman": 7 / math.sqrt(90)})
    cola = GLUE_TASKS["cola"]
    assert compute_metrics(cola, torch.tensor(BIN_PREDS), BIN_LABELS)["matthews"] == pytest.approx(14 / 24)


def test_mnli_results_are_keyed_by_split():
    mnli = GLUE_TASKS["mnli"]
    assert result_key(mnli, "validation_matched", "accuracy") == "accuracy_matched"
    assert result_key(GLUE_TASKS["sst2"], "validation", "accuracy") == "accuracy"
    out = compute_task_metrics(mnli, {"validation_matched": ([0, 1, 2, 2], [0, 1, 2, 0]),
                                      "validation_mismatched": ([0, 0], [0, 1])})
    assert out == pytest.approx({"accuracy_matched": 0.75, "accuracy_mismatched": 0.5})
    # glue_score reads exactly the keys compute_task_metrics writes
    assert set(GLUE_SCORE_METRICS["mnli"]) == set(out)


@pytest.mark.parametrize("task_name", ["qqp", "cola", "mrpc", "stsb"])
def test_torchmetrics_agree_with_numpy_over_batches(task_name):
    """Composer's evaluation path: raw model logits through ComposerClassifier.update_metric, batch by batch,
    into the task's torchmetrics, against the numpy reference on the same logits."""
    from mosaicbert.composer_models import ComposerClassifier

    task = GLUE_TASKS[task_name]
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, task.num_labels, generator=generator)
    if task.num_labels == 1:  # regression: targets correlated with the outputs
        labels = logits[:, 0] * 2 + torch.randn(64, generator=generator)
    else:
        labels = torch.randint(0, task.num_labels, (64,), generator=generator)
    metrics = build_torchmetrics(task)
    for lo in range(0, 64, 16):  # batch by batch, as Composer's evaluation loop does
        for metric in metrics.values():
            ComposerClassifier.update_metric(None, {"labels": labels[lo:lo + 16]}, logits[lo:lo + 16], metric)
    expected = compute_metrics(task, logits.numpy(), labels.numpy())
    assert {k: float(m.compute()) for k, m in metrics.items()} == pytest.approx(expected, abs=1e-6)


def test_torchmetrics_multiclass_and_regression():
    mnli = build_torchmetrics(GLUE_TASKS["mnli"])
    assert list(mnli) == ["accuracy"]
    mnli["accuracy"].update(torch.tensor(np.eye(3)[MC_PREDS]), torch.tensor(MC_LABELS))
    assert float(mnli["accuracy"].compute()) == pytest.approx(4 / 6)

    custom = TaskSpec.from_dict({"name": "three", "text_columns": "t", "label_column": "y", "num_labels": 3,
                                 "metrics": ["matthews"]})
    matthews = build_torchmetrics(custom)["matthews"]
    matthews.update(torch.tensor(MC_PREDS), torch.tensor(MC_LABELS))
    assert float(matthews.compute()) == pytest.approx(12 / math.sqrt(528), abs=1e-6)

    stsb = build_torchmetrics(GLUE_TASKS["stsb"])
    assert list(stsb) == ["pearson", "spearman"]
    for metric in stsb.values():
        metric.update(torch.tensor(CORR_X)[:, None], torch.tensor(CORR_Y))  # (N, 1) model output
    assert float(stsb["pearson"].compute()) == pytest.approx(6 / math.sqrt(60), abs=1e-6)
    assert float(stsb["spearman"].compute()) == pytest.approx(7 / math.sqrt(90), abs=1e-6)


@pytest.mark.parametrize("task_name, outputs, labels", [
    ("stsb", [[1.0], [1.0], [1.0], [1.0]], [0.1, 0.5, 0.9, 0.2]),  # a regressor that collapsed to one value
    ("stsb", [[0.3], [0.1], [0.7], [0.2]], [2.0, 2.0, 2.0, 2.0]),  # constant targets
    ("cola", [[1.0, 0.0]] * 4, [0, 1, 0, 1]),  # one predicted class
    ("mrpc", [[1.0, 0.0]] * 4, [0, 0, 0, 0]),  # no positive prediction or label
])
def test_torchmetrics_degenerate_cases_are_zero_not_nan(task_name, outputs, labels):
    """The reported metrics, not just the reference: an undefined correlation or F1 is 0.0, so one collapsed
    model cannot make a task's mean or the GLUE average NaN."""
    task = GLUE_TASKS[task_name]
    metrics = build_torchmetrics(task)
    for metric in metrics.values():
        metric.update(torch.tensor(outputs), torch.tensor(labels))
    values = {name: float(metric.compute()) for name, metric in metrics.items()}
    expected = compute_metrics(task, np.array(outputs), np.array(labels))
    assert values == pytest.approx(expected, abs=1e-6)
    for name in ("pearson", "spearman", "matthews", "f1"):
        if name in values:
            assert values[name] == 0.0, (name, values)


@pytest.mark.parametrize("predicted", [1, 0])
@pytest.mark.parametrize("positives, negatives", [(84, 44), (721, 322), (5, 0)])
def test_matthews_of_one_predicted_class_is_zero_with_unbalanced_labels(predicted, positives, negatives):
    """Balanced labels hide it: torchmetrics' binary rule adds eps to the confusion counts, which gives a small
    non-zero value (0.058 for 84/44 labels) when only one class is predicted; and 1.0 for a perfect prediction
    of labels that are all one class. Both are undefined, hence 0.0."""
    labels = torch.tensor([1] * positives + [0] * negatives)
    logits = torch.zeros(len(labels), 2)
    logits[:, predicted] = 1.0
    metric = build_torchmetrics(GLUE_TASKS["cola"])["matthews"]
    for lo in range(0, len(labels), 32):
        metric.update(logits[lo:lo + 32], labels[lo:lo + 32])
    assert float(metric.compute()) == 0.0
    assert matthews_corrcoef(logits.argmax(-1), labels) == 0.0


def test_matthews_with_a_class_never_predicted_among_three_is_the_usual_value():
    """Only an undefined correlation is 0.0: three classes with one never predicted still give R_K."""
    labels, preds = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 0, 0]
    custom = TaskSpec.from_dict({"name": "three", "text_columns": "t", "label_column": "y", "num_labels": 3,
                                 "metrics": ["matthews"]})
    metric = build_torchmetrics(custom)["matthews"]
    metric.update(torch.tensor(preds), torch.tensor(labels))
    expected = matthews_corrcoef(preds, labels)
    assert expected != 0.0 and float(metric.compute()) == pytest.approx(expected, abs=1e-6)


FULL_RESULTS = {
    "mnli": {"accuracy_matched": 0.84, "accuracy_mismatched": 0.85},  # -> 0.845
    "qnli": {"accuracy": 0.91},  # -> 0.91
    "qqp": {"accuracy": 0.90, "f1": 0.87},  # -> 0.885
    "rte": {"accuracy": 0.70},  # -> 0.70
    "sst2": {"accuracy": 0.93},  # -> 0.93
    "mrpc": {"accuracy": 0.86, "f1": 0.90},  # -> 0.88
    "cola": {"matthews": 0.58, "accuracy": 0.83},  # -> 0.58 (accuracy is not used)
    "stsb": {"pearson": 0.89, "spearman": 0.88},  # -> 0.88 (Spearman) or 0.885 (mean)
}


def test_glue_score_rules_and_average():
    out = glue_score(FULL_RESULTS)
    assert out["tasks"] == pytest.approx({"mnli": 0.845, "qnli": 0.91, "qqp": 0.885, "rte": 0.70,
                                          "sst2": 0.93, "mrpc": 0.88, "cola": 0.58, "stsb": 0.88})
    # (0.845 + 0.91 + 0.885 + 0.70 + 0.93 + 0.88 + 0.58 + 0.88) / 8 = 6.61 / 8
    assert out["glue"] == pytest.approx(6.61 / 8)
    assert out["missing"] == [] and out["ignored"] == [] and out["stsb_metric"] == "spearman"

    leaderboard = glue_score(FULL_RESULTS, stsb="mean")
    assert leaderboard["tasks"]["stsb"] == pytest.approx(0.885)
    assert leaderboard["glue"] == pytest.approx(6.615 / 8)


def test_glue_score_reports_missing_and_ignores_custom_tasks():
    out = glue_score({"sst2": {"accuracy": 0.9}, "cola": {"matthews": 0.5},
                      "rotten_tomatoes": {"accuracy": 0.8}})
    assert out["glue"] == pytest.approx(0.7)
    assert out["missing"] == ["mnli", "qnli", "qqp", "rte", "mrpc", "stsb"]
    assert out["ignored"] == ["rotten_tomatoes"]
    assert glue_score({})["glue"] is None


def test_glue_score_needs_every_metric_of_a_present_task():
    with pytest.raises(ValueError, match="'mrpc' lacks metric 'f1'"):
        glue_score({"mrpc": {"accuracy": 0.8}})
    with pytest.raises(ValueError, match="stsb must be one of"):
        glue_score(FULL_RESULTS, stsb="pearson")


def test_mean_over_seeds_and_glue_score_of_means():
    runs = [{"accuracy": 0.8, "f1": 0.7}, {"accuracy": 0.9, "f1": 0.8}, {"accuracy": 0.7, "f1": 0.9}]
    summary = mean_over_seeds(runs)
    # accuracy: mean 0.8; deviations 0, +0.1, -0.1 -> sample variance (0.01 + 0.01) / 2 = 0.01 -> std 0.1
    assert summary["accuracy"] == pytest.approx({"mean": 0.8, "std": 0.1, "n": 3})
    assert summary["f1"]["mean"] == pytest.approx(0.8)
    assert mean_over_seeds([{"accuracy": 0.5}])["accuracy"] == {"mean": 0.5, "std": 0.0, "n": 1}
    # glue_score accepts the summaries directly: MRPC = (0.8 + 0.8) / 2
    assert glue_score({"mrpc": summary})["tasks"]["mrpc"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="run 1 reports"):
        mean_over_seeds([{"accuracy": 0.8}, {"f1": 0.8}])
    with pytest.raises(ValueError, match="at least one run"):
        mean_over_seeds([])
