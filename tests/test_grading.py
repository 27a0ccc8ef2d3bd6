"""bnlib.grade_batchnorm: torch's and bnlib's layers pass; each deliberately wrong layer fails the
check that should catch it, with the right diagnosis; a broken layer never makes it raise."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from wrong_layers import (
    AcceptsBatchOfOne,
    BiasedRunningVar,
    DetachedStatistics,
    EpsIgnored,
    EpsIgnoredInEval,
    EpsOutsideSqrt,
    GammaBeta,
    GradModeSwitch,
    KerasMomentum,
    NoBatchCounter,
    NoEvalMode,
    OnlyNumFeatures,
    RaisesInForward,
    ReturnsNothing,
    ScratchBatchNorm,
    UnbiasedNormalisation,
    UpdatesInEval,
    WrongDims,
)

import bnlib
from bnlib.grading import GradeReport, grade_batchnorm

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


@functools.cache
def grade(layer_class, dims=(1, 2)) -> GradeReport:
    return grade_batchnorm(layer_class, dims=dims)


@pytest.mark.parametrize("make_layer", [
    {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}, {1: bnlib.BatchNorm1d, 2: bnlib.BatchNorm2d},
    ScratchBatchNorm], ids=["torch", "bnlib", "scratch"])
def test_correct_layers_pass_every_check(make_layer):
    report = grade_batchnorm(make_layer)
    assert report.passed, str(report)
    assert all(result.passed for result in report.results)
    assert len(report.results) == 20


def test_torch_1d_alone_grades_only_2d_inputs_when_asked():
    assert grade_batchnorm(nn.BatchNorm1d, dims=(1,)).passed
    assert grade_batchnorm(nn.BatchNorm2d, dims=(2,)).passed
    report = grade_batchnorm(nn.BatchNorm1d)  # BatchNorm1d refuses 4D inputs
    assert [r.name for r in report.failed] == ["training output (N, C, H, W)",
                                              "gradients (N, C, H, W)", "eval output (N, C, H, W)",
                                              "running statistics (N, C, H, W)"]
    assert all(r.diagnosis == "raised" and "4D" in r.explanation for r in report.failed)


MISTAKES = [
    (UnbiasedNormalisation, "training output (N, C)", "unbiased_normalisation",
     "bn-transform-var"),
    (BiasedRunningVar, "running statistics (N, C)", "biased_running_var",
     "bn-transform-population"),
    (KerasMomentum, "running statistics (N, C)", "keras_momentum", "bn-transform-running-keras"),
    (NoEvalMode, "eval output (N, C)", "no_eval_mode", "bn-transform-inference"),
    (EpsOutsideSqrt, "training output (N, C)", "eps_outside_sqrt", "bn-transform-normalise"),
    (WrongDims, "training output (N, C, H, W)", "wrong_dims", "Which values share a mean"),
    (UpdatesInEval, "eval leaves statistics alone", "stats_updated_in_eval",
     "training mode and evaluation mode"),
    (NoBatchCounter, "num_batches_tracked", "num_batches_tracked_missing",
     "bn-transform-cumulative"),
    (GradModeSwitch, "eval output (N, C)", "grad_mode_switch", "torch.is_grad_enabled()"),
    (GradModeSwitch, "training mode under no_grad", "grad_mode_switch", "self.training"),
    (DetachedStatistics, "gradients (N, C)", "detached_statistics", "bp-dx-compact"),
    (AcceptsBatchOfOne, "batch of one", "batch_of_one_accepted", "bn-transform-var"),
    (GammaBeta, "state dict", "state_dict_keys", "['gamma', 'beta']"),
    (EpsIgnored, "keyword eps=0.1", "eps_ignored", "bn-transform-normalise"),
    (EpsIgnoredInEval, "keyword eps=0.1", "eps_ignored", "bn-transform-normalise"),
]


@pytest.mark.parametrize("layer_class, check, diagnosis, reference", MISTAKES,
                         ids=[f"{m[0].__name__}-{m[1]}" for m in MISTAKES])
def test_each_mistake_is_caught_by_its_check_with_its_diagnosis(layer_class, check, diagnosis,
                                                                reference):
    report = grade(layer_class)
    assert not report.passed
    result = report[check]
    assert result.status == "failed" and result.diagnosis == diagnosis, str(report)
    assert reference in result.explanation and "bn_transform" not in result.explanation
    chapter = "Backpropagation" if check.startswith("gradients") else "The BN transform"
    assert f"See '{chapter}" in result.explanation
    assert f"FAILED        {check}" in str(report)


def test_mistakes_leave_unrelated_checks_passing():
    assert grade(BiasedRunningVar)["training output (N, C)"].passed
    assert grade(BiasedRunningVar)["gradients (N, C)"].passed
    assert grade(NoEvalMode)["running statistics (N, C)"].passed
    assert grade(WrongDims)["training output (N, C)"].passed
    assert grade(NoBatchCounter)["keyword momentum=None"].passed
    assert grade(NoBatchCounter)["state dict"].diagnosis == "num_batches_tracked_missing"
    assert grade(GammaBeta)["gradients (N, C)"].passed  # gamma and beta found by their order
    assert grade(GradModeSwitch)["training output (N, C)"].passed


def test_unbiased_normalisation_shows_in_the_gradients_as_a_forward_error():
    report = grade(UnbiasedNormalisation)
    assert report["gradients (N, C)"].diagnosis == "forward_wrong"
    assert report["running statistics (N, C)"].passed  # running_var gets the unbiased variance


def test_a_layer_that_raises_gives_failed_checks_not_an_exception():
    report = grade(RaisesInForward)
    assert not report.passed
    result = report["training output (N, C)"]
    assert result.diagnosis == "raised"
    assert "RuntimeError: forgot to write forward" in result.explanation
    assert "wrong_layers.py" in result.explanation  # where it raised
    assert report["construction"].passed


def test_keywords_the_constructor_refuses_are_not_supported_not_failed():
    report = grade(OnlyNumFeatures)
    keywords = [r for r in report.results if r.name.startswith("keyword")]
    assert len(keywords) == 5 and all(r.status == "not supported" for r in keywords)
    assert report.passed  # everything it supports is right
    assert "5 not supported" in report.summary()


def test_a_maker_that_returns_no_module_fails_construction_only():
    report = grade_batchnorm(lambda num_features: "not a layer")
    assert [r.name for r in report.results] == ["construction"]
    assert not report.passed and "not an nn.Module" in report["construction"].explanation


def test_report_renders_as_text_and_html():
    report = grade(KerasMomentum)
    text, page = str(report), report._repr_html_()
    assert text.startswith("KerasMomentum: FAILED")
    assert "Keras-style momentum" in text and "Keras-style momentum" in page
    assert page.count("<tr>") == len(report.results) + 1
    assert "&lt; 1e-06" in page and "<td><" not in page  # the bound is escaped
    with pytest.raises(KeyError, match="no check named"):
        report["no such check"]


def test_bad_dims_raise_value_error():
    with pytest.raises(ValueError, match="dims must hold"):
        grade_batchnorm(nn.BatchNorm1d, dims=(3,))
    with pytest.raises(ValueError, match="no entry for dims"):
        grade_batchnorm({1: nn.BatchNorm1d}, dims=(1, 2))


def test_grading_leaves_global_state_alone():
    state = torch.get_rng_state()
    grade_batchnorm(nn.BatchNorm1d, dims=(1,))
    assert torch.equal(state, torch.get_rng_state()) and torch.is_grad_enabled()
    assert torch.get_default_dtype() == torch.float32


def test_a_forward_that_returns_nothing_and_a_constructor_that_raises_are_failed_checks():
    report = grade_batchnorm(ReturnsNothing, dims=(1,))
    assert report["training output (N, C)"].diagnosis == "wrong_shape"
    assert "NoneType" in report["training output (N, C)"].explanation

    def broken(num_features, **kwargs):
        raise ZeroDivisionError("oops")

    report = grade_batchnorm(broken)
    assert [(r.name, r.diagnosis) for r in report.results] == [("construction", "raised")]
    assert "ZeroDivisionError: oops" in report["construction"].explanation
