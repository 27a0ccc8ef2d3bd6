"""A from-scratch BN layer graded against torch's, check by check, with the mistake behind each
failure (:func:`grade_batchnorm`; the command ``python -m bnlib grade``).

* :mod:`bnlib.grading.report`: the grader and its report;
* :mod:`bnlib.grading.checks` and :mod:`bnlib.grading.running`: the checks, on outputs and
  gradients and on running statistics; :mod:`bnlib.grading.probes`: what they measure with;
* :mod:`bnlib.grading.mistakes`: the mistakes behind failures, with their chapter sections;
* :mod:`bnlib.grading.cli`: the ``grade`` command.
"""

from bnlib.grading.report import CheckResult, GradeReport, grade_batchnorm

__all__ = ["CheckResult", "GradeReport", "grade_batchnorm"]
