r"""Grade a batch-normalisation layer written from scratch against torch's, point by point.

:func:`grade_batchnorm` runs torch's BN contract on a learner's layer, in float64 against
``torch.nn.BatchNorm1d``/``2d``: training output and gradients, eval mode, the running statistics
over several steps, ``num_batches_tracked``, the state dict, a batch of one, and each keyword
(``eps``, ``momentum`` and ``momentum=None``, ``affine=False``, ``track_running_stats=False``).
A failed check names the mistake the numbers reveal, and where the book explains it. Nothing the
layer does makes the grader raise: an exception in its code is a failed check with its message.

    >>> import torch, bnlib
    >>> bnlib.grade_batchnorm({1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d}).passed
    True
"""

from __future__ import annotations

import html
import textwrap
import traceback
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import nn

from bnlib.grading import checks
from bnlib.grading.mistakes import MISTAKES, pointer
from bnlib.grading.probes import SHAPES, TOLERANCE, Finding, NotSupported, Subject

__all__ = ["CheckResult", "GradeReport", "grade_batchnorm"]

# name, check, what it verifies (the explanation of a check that passed); run once, on the first
# input rank graded
CONTRACT = [
    ("initial state", checks.check_initial_state,
     "A fresh layer has weight 1, bias 0, running_mean 0 and running_var 1."),
    ("num_batches_tracked", checks.check_num_batches_tracked,
     "num_batches_tracked counts training batches (0, 1, 2, 3) and not eval ones."),
    ("eval leaves statistics alone", checks.check_eval_leaves_statistics,
     "Eval-mode passes leave the running statistics unchanged."),
    ("training mode under no_grad", checks.check_training_under_no_grad,
     "Training mode inside torch.no_grad() still normalises with the batch and updates the "
     "running statistics."),
    ("state dict", checks.check_state_dict,
     "The state dict has torch's keys and loads both ways."),
    ("batch of one", checks.check_batch_of_one,
     "Training mode refuses one value per channel; eval mode takes a batch of one."),
]
KEYWORDS = [
    ("keyword eps=0.1", checks.check_eps, "eps is used, under the square root."),
    ("keyword momentum=0.3", checks.check_momentum,
     "momentum weights the new batch statistic."),
    ("keyword momentum=None", checks.check_momentum_none,
     "momentum=None keeps the cumulative average of the batch statistics."),
    ("keyword affine=False", checks.check_affine_false,
     "affine=False registers no parameters and outputs x_hat."),
    ("keyword track_running_stats=False", checks.check_untracked,
     "track_running_stats=False keeps no running statistics and uses batch statistics in eval "
     "mode."),
]
# run for every input rank graded
PER_SHAPE = [
    ("training output", checks.check_training_output,
     "The training-mode output matches torch's."),
    ("gradients", checks.check_gradients,
     "The input, weight and bias gradients match torch's."),
    ("eval output", checks.check_eval_output,
     "With the same running statistics, the eval-mode output matches torch's."),
    ("running statistics", checks.check_running_statistics,
     "running_mean and running_var match torch's after each of four training batches "
     "(momentum 0.1, unbiased variance)."),
]
SHAPE_NAMES = {1: "(N, C)", 2: "(N, C, H, W)"}


@dataclass(frozen=True)
class CheckResult:
    """One check: ``status`` is "passed", "failed" or "not supported" (a keyword the layer's
    constructor refuses); ``diagnosis`` is the key of the mistake recognised, if any."""

    name: str
    status: str
    largest_difference: float | None
    explanation: str
    diagnosis: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True, repr=False)
class GradeReport:
    """Every check's result. ``passed`` is True when no check failed (keywords the layer does not
    accept are listed as "not supported", not failed)."""

    layer: str
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(result.status != "failed" for result in self.results)

    def __getitem__(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(f"no check named {name!r}; the checks are {[r.name for r in self.results]}")

    @property
    def failed(self) -> list[CheckResult]:
        return [result for result in self.results if result.status == "failed"]

    def summary(self) -> str:
        counts = {status: sum(r.status == status for r in self.results)
                  for status in ("passed", "failed", "not supported")}
        verdict = "PASSED" if self.passed else "FAILED"
        return (f"{self.layer}: {verdict} ({counts['passed']} passed, {counts['failed']} failed, "
                f"{counts['not supported']} not supported; tolerance {TOLERANCE:g})")

    def __repr__(self) -> str:
        return f"<GradeReport {self.summary()}>"

    def __str__(self) -> str:
        lines = [self.summary()]
        for result in self.results:
            gap = _format_gap(result.largest_difference)
            lines.append(f"  {result.status.upper():13} {result.name:36} {gap}")
            if result.status != "passed":
                lines.append(_indent(result.explanation))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colours = {"passed": "#1a7f37", "failed": "#cf222e", "not supported": "#6e7781"}
        cells = [(f"<td style='color:{colours[r.status]};font-weight:bold'>{r.status}</td>",
                  r.name, _format_gap(r.largest_difference), r.explanation)
                 for r in self.results]
        rows = "".join(f"<tr>{status}<td>{html.escape(name)}</td><td>{html.escape(gap)}</td>"
                       f"<td style='text-align:left'>{html.escape(text)}</td></tr>"
                       for status, name, gap, text in cells)
        head = "".join(f"<th>{title}</th>" for title in
                       ("result", "check", "largest difference", "explanation"))
        return (f"<p><b>{html.escape(self.summary())}</b></p>"
                f"<table><tr>{head}</tr>{rows}</table>")


def _format_gap(gap: float | None) -> str:
    """The largest difference as printed: below the tolerance only the bound, so that a report
    reads the same on every machine (rounding differs in the last bits)."""
    if gap is None:
        return "-"
    if gap <= TOLERANCE:
        return f"< {TOLERANCE:.0e}"
    return "inf" if gap == float("inf") else f"{gap:.1e}"


def _indent(text: str, width: int = 92) -> str:
    return textwrap.fill(text, width=width, initial_indent=" " * 16,
                         subsequent_indent=" " * 16)


def _explain(finding: Finding, description: str) -> CheckResult:
    """status and explanation of a finding (the check's name is added by the caller)."""
    if finding.diagnosis is None:
        return CheckResult("", "passed", finding.gap, description)
    mistake = MISTAKES[finding.diagnosis]
    text = " ".join(part for part in (f"Likely mistake: {mistake.title}.", mistake.why,
                                      finding.detail, pointer(mistake.chapter, mistake.where))
                    if part)
    return CheckResult("", "failed", finding.gap, text, finding.diagnosis)


def _raised(error: Exception, description: str) -> CheckResult:
    frames = traceback.extract_tb(error.__traceback__)
    place = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    message = f"{type(error).__name__}: {error}".strip().splitlines()[0]
    mistake = MISTAKES["raised"]
    text = (f"The layer raised {message}{place}. With torch's layer: {description} "
            f"{pointer(mistake.chapter, mistake.where)}")
    return CheckResult("", "failed", None, text, "raised")


def run_check(name: str, check: Callable[[Subject], Finding], description: str,
              subject: Subject) -> CheckResult:
    """One check, whatever the layer does: a refused keyword is "not supported", an exception
    in the layer's code a failure that quotes it."""
    try:
        with warnings.catch_warnings():  # the report says what went wrong; warnings repeat it
            warnings.simplefilter("ignore")
            result = _explain(check(subject), description)
    except NotSupported as refused:
        result = CheckResult("", "not supported", None,
                             f"The constructor does not accept the keyword {refused}; the "
                             "other checks do not depend on it.")
    except Exception as error:  # noqa: BLE001  the learner's code may raise anything
        result = _raised(error, description)
    return CheckResult(name, result.status, result.largest_difference, result.explanation,
                       result.diagnosis)


def _check_construction(subject: Subject) -> Finding:
    subject.build()
    return Finding(None, None)


def _describe(make_layer) -> str:
    if isinstance(make_layer, Mapping):
        return " / ".join(_describe(value) for value in make_layer.values())
    return getattr(make_layer, "__qualname__", None) or type(make_layer).__name__


def _makers(make_layer, dims) -> dict[int, Callable[..., nn.Module]]:
    unknown = [d for d in dims if d not in SHAPES]
    if unknown or not dims:
        raise ValueError(f"dims must hold 1 and/or 2, got {tuple(dims)}")
    if isinstance(make_layer, Mapping):
        missing = [d for d in dims if d not in make_layer]
        if missing:
            raise ValueError(f"make_layer has no entry for dims {missing}; give one for each "
                             f"of {tuple(dims)} or grade only dims={tuple(make_layer)}")
        return {d: make_layer[d] for d in dims}
    return {d: make_layer for d in dims}


def grade_batchnorm(make_layer, *, dims=(1, 2)) -> GradeReport:
    """Grade a from-scratch BN layer against ``torch.nn.BatchNorm1d``/``2d``.

    Args:
        make_layer: ``make_layer(num_features, **kwargs)`` returns the layer (an ``nn.Module``);
            a class with torch's constructor works as is. A mapping ``{1: ..., 2: ...}`` gives
            one maker per input rank, e.g. ``{1: nn.BatchNorm1d, 2: nn.BatchNorm2d}``.
        dims: the input ranks to grade: 1 for (N, C) inputs, graded against ``BatchNorm1d``,
            2 for (N, C, H, W) inputs with statistics over (N, H, W), against ``BatchNorm2d``.
            The contract and keyword checks run on the first; the output, gradient, eval and
            running-statistics checks on each. Default: ``(1, 2)``.

    Returns:
        GradeReport: ``.passed``, ``.results`` (one :class:`CheckResult` per check), a readable
        ``str`` and an HTML table in notebooks. Never raises for what the layer does; a bad
        ``dims`` or mapping raises ValueError.
    """
    makers = _makers(make_layer, tuple(dims))
    subjects = [Subject(maker, kind) for kind, maker in makers.items()]
    construction = run_check("construction", _check_construction,
                             "make_layer(3) returns an nn.Module.", subjects[0])
    if not construction.passed:  # nothing else can run without a layer
        return GradeReport(_describe(make_layer), (construction,))
    results = [construction]
    for subject in subjects:
        suffix = f" {SHAPE_NAMES[subject.kind]}"
        results += [run_check(name + suffix, check, text, subject)
                    for name, check, text in PER_SHAPE]
    first = subjects[0]
    results += [run_check(name, check, text, first) for name, check, text in CONTRACT + KEYWORDS]
    return GradeReport(_describe(make_layer), tuple(results))
