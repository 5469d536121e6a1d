import pytest

from rnn_sentiment.model.evaluation import EvaluationReport, format_report
from rnn_sentiment.model.metrics import classification_metrics, expected_calibration_error
from rnn_sentiment.model.training import fit_temperature


def test_confusion_accuracy_and_macro_f1():
    metrics = classification_metrics([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], 2)
    assert metrics.confusion == ((1, 1), (1, 2))  # ((tn, fp), (fn, tp))
    assert metrics.accuracy == pytest.approx(0.6)
    assert metrics.macro_f1 == pytest.approx((0.5 + 2 / 3) / 2)


def test_ece_of_perfectly_calibrated_bins_is_zero():
    assert expected_calibration_error([1.0, 1.0], [True, True]) == pytest.approx(0.0)
    assert expected_calibration_error([0.9, 0.9], [False, False]) == pytest.approx(0.9)


def test_fit_temperature_softens_overconfident_logits():
    import torch
    torch.manual_seed(0)
    labels = torch.randint(0, 2, (400,))
    # 70% correct but always very confident: the best temperature is well above 1.
    correct = torch.rand(400) < 0.7
    predicted = torch.where(correct, labels, 1 - labels)
    logits = torch.nn.functional.one_hot(predicted, 2).float() * 8.0
    assert fit_temperature(logits, labels) > 4.0


def test_format_report_is_a_table():
    report = EvaluationReport(accuracy=0.5, macro_f1=0.4, confusion=((1, 2), (3, 4)), count=10, ece=0.1,
                              labels=("negative", "positive"))
    text = format_report(report)
    assert "accuracy   0.5000" in text and "negative" in text.splitlines()[-2]
    assert report.to_dict()["confusion"] == [[1, 2], [3, 4]]
