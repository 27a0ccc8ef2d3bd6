"""bnlib.grade_batchnorm: torch's and bnlib's layers pass; each deliberately wrong layer fails the
check that should catch it, with the right diagnosis; a broken layer never makes it raise."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import bnlib
from bnlib.grading import GradeReport, grade_batchnorm

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


class ScratchBatchNorm(nn.Module):
    """A correct from-scratch BN for (N, C, *) inputs with torch's constructor; each mistake
    below overrides one method."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True):
        super().__init__()
        self.eps, self.momentum, self.track_running_stats = eps, momentum, track_running_stats
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        tracked = {"running_mean": torch.zeros(num_features),
                   "running_var": torch.ones(num_features),
                   "num_batches_tracked": torch.tensor(0, dtype=torch.long)}
        for name, value in tracked.items():
            self.register_buffer(name, value if track_running_stats else None)

    def dims(self, x):
        return [0] + list(range(2, x.dim()))

    def batch_statistics(self, x):
        var, mean = torch.var_mean(x, dim=self.dims(x), correction=0)
        return mean, var

    def normalise(self, x, mean, var):
        return (x - mean) / torch.sqrt(var + self.eps)

    def uses_batch_statistics(self):
        return self.training or not self.track_running_stats

    def factor(self):
        self.num_batches_tracked += 1
        return 1 / self.num_batches_tracked.item() if self.momentum is None else self.momentum

    def stored_variance(self, x, var):
        count = x.numel() // x.shape[1]
        return var * count / (count - 1)

    @torch.no_grad()
    def update(self, x, mean, var):
        rho = self.factor()
        self.running_mean.mul_(1 - rho).add_(rho * mean)
        self.running_var.mul_(1 - rho).add_(rho * self.stored_variance(x, var))

    def forward(self, x):
        view = [1, -1] + [1] * (x.dim() - 2)
        if self.uses_batch_statistics():
            if x.numel() // x.shape[1] == 1:
                raise ValueError("Expected more than 1 value per channel when training")
            mean, var = self.batch_statistics(x)
            if self.training and self.track_running_stats:
                self.update(x, mean, var)
        else:
            mean, var = self.running_mean, self.running_var
        y = self.normalise(x, mean.view(view), var.view(view))
        weight, bias = self.affine_parameters()
        if weight is not None:
            y = y * weight.view(view) + bias.view(view)
        return y

    def affine_parameters(self):
        return self.weight, self.bias


class UnbiasedNormalisation(ScratchBatchNorm):
    def batch_statistics(self, x):
        var, mean = torch.var_mean(x, dim=self.dims(x))  # correction=1 by default
        return mean, var

    def stored_variance(self, x, var):
        return var


class BiasedRunningVar(ScratchBatchNorm):
    def stored_variance(self, x, var):
        return var


class KerasMomentum(ScratchBatchNorm):
    def factor(self):
        return 1 - super().factor()


class NoEvalMode(ScratchBatchNorm):
    def uses_batch_statistics(self):
        return True


class EpsOutsideSqrt(ScratchBatchNorm):
    def normalise(self, x, mean, var):
        return (x - mean) / (torch.sqrt(var) + self.eps)


class WrongDims(ScratchBatchNorm):
    def batch_statistics(self, x):
        # right for (N, C); for (N, C, H, W) each column mixes the channels
        var, mean = torch.var_mean(x.reshape(-1, x.shape[1]), dim=0, correction=0)
        return mean, var


class UpdatesInEval(ScratchBatchNorm):
    def forward(self, x):
        if not self.training:
            self.update(x, *self.batch_statistics(x))
        return super().forward(x)


class NoBatchCounter(ScratchBatchNorm):
    def __init__(self, num_features, **kwargs):
        super().__init__(num_features, **kwargs)
        self.num_batches_tracked = None
        self.batches = 0

    def factor(self):
        self.batches += 1
        return 1 / self.batches if self.momentum is None else self.momentum


class GradModeSwitch(ScratchBatchNorm):
    def uses_batch_statistics(self):
        return torch.is_grad_enabled()  # instead of self.training


class DetachedStatistics(ScratchBatchNorm):
    def batch_statistics(self, x):
        return tuple(statistic.detach() for statistic in super().batch_statistics(x))


class AcceptsBatchOfOne(ScratchBatchNorm):
    def forward(self, x):
        if self.training and x.numel() == x.shape[1]:
            return torch.zeros_like(x) + self.bias.view(1, -1)
        return super().forward(x)


class GammaBeta(ScratchBatchNorm):
    """The paper's names for the parameters; torch's are weight and bias."""

    def __init__(self, num_features, **kwargs):
        super().__init__(num_features, **kwargs)
        self.gamma, self.beta = self._parameters.pop("weight"), self._parameters.pop("bias")

    def affine_parameters(self):
        return self.gamma, self.beta


class EpsIgnored(ScratchBatchNorm):
    def __init__(self, num_features, eps=1e-5, **kwargs):
        super().__init__(num_features, **kwargs)


class EpsIgnoredInEval(ScratchBatchNorm):
    def forward(self, x):
        if self.training:
            return super().forward(x)
        eps, self.eps = self.eps, 1e-5
        try:
            return super().forward(x)
        finally:
            self.eps = eps


class RaisesInForward(ScratchBatchNorm):
    def forward(self, x):
        raise RuntimeError("forgot to write forward")


class OnlyNumFeatures(ScratchBatchNorm):
    def __init__(self, num_features):
        super().__init__(num_features)


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
    assert "test_grading.py" in result.explanation  # where it raised
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


class ReturnsNothing(ScratchBatchNorm):
    def forward(self, x):
        super().forward(x)


def test_a_forward_that_returns_nothing_and_a_constructor_that_raises_are_failed_checks():
    report = grade_batchnorm(ReturnsNothing, dims=(1,))
    assert report["training output (N, C)"].diagnosis == "wrong_shape"
    assert "NoneType" in report["training output (N, C)"].explanation

    def broken(num_features, **kwargs):
        raise ZeroDivisionError("oops")

    report = grade_batchnorm(broken)
    assert [(r.name, r.diagnosis) for r in report.results] == [("construction", "raised")]
    assert "ZeroDivisionError: oops" in report["construction"].explanation
