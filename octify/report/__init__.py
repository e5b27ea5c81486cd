"""Cost report: multiply-accumulates, parameters and feature-map memory, per layer and in total.

``cost(model)`` measures one model; ``build_report(original, converted, example_inputs, notes)``
compares a model with its conversion. Counting rules live in one registry
(:mod:`octify.report.rules`); ``register_rule`` adds one for a new module type or function.
"""
from . import octave_rules, torch_rules  # noqa: F401  (register the built-in counting rules)
from .comparison import Report, build_report
from .costs import SCHEMA_VERSION, LayerCost, ModelCost
from .counting import cost
from .coverage import Coverage, ReasonGroup, SavingsWarning
from .latency import Latency
from .rules import RULES, CountingRule, OpCall, find_rule, register_rule

__all__ = ["RULES", "SCHEMA_VERSION", "CountingRule", "Coverage", "LayerCost", "Latency", "ModelCost", "OpCall", "ReasonGroup",
           "Report", "SavingsWarning", "build_report", "cost", "find_rule", "register_rule"]
