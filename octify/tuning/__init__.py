"""Tuning: one alpha per group of convolutions, chosen by measured latency to meet a target.

``octify.tune(model, fastest=True)`` (or ``target_macs=0.5``, ``target_latency=0.7``) measures each
group's operations at each candidate alpha in place (:mod:`.measure`), caches the times (:mod:`.cache`),
chooses (:mod:`.choose`), checks the result end to end, and returns the conversion with its
:class:`Tuning` (which writes the schedule file).
"""
from .cache import CACHE_ENV, MeasurementCache, default_cache_dir
from .choose import GroupCosts, Target
from .measure import Setting
from .result import Tuning
from .timing import LayerProbe, MedianTimer, ModelProbe, Timer
from .tune import TargetWarning, tune

__all__ = ["CACHE_ENV", "GroupCosts", "LayerProbe", "MeasurementCache", "MedianTimer", "ModelProbe", "Setting",
           "Target", "TargetWarning", "Timer", "Tuning", "default_cache_dir", "tune"]
