"""``octify.tune``: convert with one alpha per group of convolutions, chosen by measurement to meet a target."""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..capture.tracer import LeafSpec
from ..convert import Conversion, convert
from ..notes import Note
from ..plan import AlphaGroup
from ..plan.min_size import MinSize
from ..report import LayerCost, Report
from ..report.coverage import SavingsWarning
from ..report.latency import Latency
from .cache import MeasurementCache, cache_key, default_cache_dir, model_signature
from .choose import LATENCY, MACS, SLOWER, Estimate, GroupCosts, Target, choose, choose_by_macs, missed_macs
from .measure import UNGROUPED, Setting, batch_inputs, layer_groups, recorded_layers, runner
from .result import Tuning, schedule_names
from .timing import LayerProbe, MedianTimer, ModelProbe, Timer

CANDIDATE_ALPHAS = (0.25, 0.5, 0.75)
MAC_CORRECTIONS = 3  # further conversions that may correct the MAC estimate towards a MAC target
MAC_SLACK = 0.01  # counted MACs this close under a MAC target are close enough
DEFAULT_CACHE = object()  # cache_dir's default: $OCTIFY_CACHE_DIR or ~/.cache/octify
Progress = Callable[[str, int, int], None]  # (what, done, total)
Chooser = Callable[[float], Tuple[Estimate, Optional[str]]]


class TargetWarning(UserWarning):
    """A tuning target could not be met (never slower than the original wins); the message says by how much."""


def tune(model: nn.Module, *, target_macs: Optional[float] = None, target_latency: Optional[float] = None,
         fastest: bool = False, measure: bool = True, batch_size: int = 1, device: str = "cpu",
         dtype: Optional[torch.dtype] = None, mode: str = "eager", alphas: Sequence[float] = CANDIDATE_ALPHAS,
         timer: Optional[Timer] = None, cache_dir: Any = DEFAULT_CACHE, progress: Optional[Progress] = None,
         input_shape: Sequence[int] = (1, 3, 224, 224), example_inputs: Optional[Sequence[torch.Tensor]] = None,
         leaf_modules: Iterable[LeafSpec] = (), min_size: MinSize = "auto", plain_stem: bool = True,
         auto_leaf: bool = True) -> Conversion:
    """Convert ``model`` with one alpha per group of convolutions, chosen to meet one target.

    Targets (exactly one): ``target_macs`` (a ratio of the original's MACs: the lowest measured latency within
    it, where latencies estimated within 1% of the original's count as equal and of equals the one with the most
    MACs, closest to the target, wins; with ``measure=False``, the fewest octave groups, largest first, timing
    nothing; either way the counted MACs are checked and the choice made again when they are over the target or
    more than 0.01 under it), ``target_latency`` (a ratio of the original's latency: the fewest MACs within it)
    or ``fastest=True``. A measured result is never slower than the original: a group whose octave forms do not
    pay stays plain, and the converted network is timed end to end against the original, the groups that save
    least made plain until it holds. A target that cannot be met gives a :class:`TargetWarning` and a note saying
    by how much.

    Measurement (:mod:`octify.tuning.measure`): ``batch_size``, ``device`` (``"cpu"``, ``"cuda"``), ``dtype``
    (None: float32; ``torch.float16`` / ``torch.bfloat16``: autocast) and ``mode`` (``"eager"``: as
    :func:`octify.for_inference` runs; ``"compile"``: whole networks also through ``torch.compile``); ``alphas``:
    the candidates besides 0; ``timer({probe: function}) -> {probe: seconds}`` (default :class:`MedianTimer`).
    Measurements are cached in ``cache_dir`` (default ``$OCTIFY_CACHE_DIR``, else ``~/.cache/octify``; None:
    not kept), keyed by the model's structure and the setting. ``progress(what, done, total)`` is called as the
    work goes. The other arguments are :func:`octify.convert`'s.

    Returns the :class:`~octify.Conversion` with the chosen schedule; its ``tuning`` is a :class:`Tuning`
    (``tuning.write_schedule(path)`` writes the file ``convert`` and ``--schedule`` read back) and, when
    measured, its report carries the latencies.
    """
    target = Target.from_options(target_macs, target_latency, fastest)
    if not measure and target.kind != MACS:
        raise ValueError(f"{target} needs measurement: pass measure=True (only target_macs can be met from MACs alone)")
    candidates = _candidate_alphas(alphas)
    setting = Setting(batch_size, device, dtype, mode) if measure else None
    progress = progress or (lambda what, done, total: None)
    options: Dict[str, Any] = dict(input_shape=input_shape, example_inputs=example_inputs,
                                   leaf_modules=list(leaf_modules), min_size=min_size, plain_stem=plain_stem,
                                   auto_leaf=auto_leaf)
    converter = _Converter(model, options)
    variants = _Variants(converter, candidates, progress)
    folder = None if setting is None or cache_dir is None else default_cache_dir() if cache_dir is DEFAULT_CACHE \
        else cache_dir
    cache = MeasurementCache(folder, cache_key([*model_signature(model), _options_key(options), repr(candidates),
                                                *(setting.cache_parts() if setting else [])]))
    groups, costs, base_macs = _structure(cache, variants)

    schedules = _Schedules(converter, groups, candidates[-1], cache)
    if setting is None:
        estimate, _ = choose_by_macs(costs, target.ratio, base_macs)
        estimate = _meet_macs(lambda ratio: choose_by_macs(costs, ratio, base_macs), target.ratio, estimate,
                              base_macs, schedules)
        conversion = schedules.conversion(estimate.alphas)
        macs_ratio = _macs_ratio(conversion)
        missed = missed_macs(target.ratio, macs_ratio, "the other convolutions cannot be octave") \
            if macs_ratio > target.ratio else None
        tuning = Tuning(target, "MACs only, not measured", groups, estimate.alphas, costs, macs_ratio, candidates[-1],
                        missed=missed)
        converter.warn(conversion)
        return _finish(model, conversion, tuning, None)

    measurer = _Measurer(model, variants, groups, _example_inputs(options), setting, timer or MedianTimer(), cache,
                         progress)
    costs, base_latency = measurer.layer_costs(costs)
    estimate, chose_missed = choose(costs, target, base_latency, base_macs)
    if target.kind == MACS:
        estimate = _meet_macs(lambda ratio: choose(costs, Target(MACS, ratio), base_latency, base_macs),
                              target.ratio, estimate, base_macs, schedules)
    alphas, times, corrections = _check_end_to_end(estimate.alphas, costs, measurer, schedules)
    conversion = schedules.conversion(alphas)
    macs_ratio = _macs_ratio(conversion)
    ratio = times[1] / times[0]
    missed = _missed(target, macs_ratio, ratio, chose_missed is not None, bool(corrections))
    estimated = estimate.latency / base_latency if alphas == estimate.alphas else None
    tuning = Tuning(target, setting.describe(), groups, alphas, costs, macs_ratio, candidates[-1], estimated, ratio,
                    missed, corrections, [name for name in estimate.alphas if estimate.alphas[name] != alphas[name]])
    latency = Latency(setting.describe(), times[0], times[1], estimated)
    converter.warn(conversion)
    return _finish(model, conversion, tuning, (latency, measurer.layer_seconds))


def _missed(target: Target, macs_ratio: float, ratio: float, chose_missed: bool, corrected: bool) -> Optional[str]:
    """Why a measured tuning's result misses its target, with the amount; None when it meets it."""
    if target.kind == MACS and macs_ratio > target.ratio:
        return missed_macs(target.ratio, macs_ratio, SLOWER if chose_missed else (
            "the end-to-end check made groups plain to keep the model no slower than the original" if corrected
            else "layers between groups at different alphas cost more MACs than estimated"))
    if target.kind == LATENCY and ratio > target.ratio:
        why = "no schedule was estimated within it, so this is the fastest" if chose_missed else \
            "the schedule estimated within it measured slower end to end"
        return (f"target_latency {target.ratio:g} missed: measured {ratio:.3f} of the original's latency "
                f"({ratio - target.ratio:.3f} over); {why}")
    return None


class _Schedules:
    """Conversions by group alphas, each made once; their counted MAC ratios are cached too, so that a cached
    tuning converts only its result."""

    def __init__(self, converter: "_Converter", groups: List[AlphaGroup], others: float,
                 cache: MeasurementCache) -> None:
        self.converter, self.groups, self.others, self.cache = converter, groups, others, cache
        self.made: Dict[Tuple[Tuple[str, float], ...], Conversion] = {}

    @staticmethod
    def key(alphas: Mapping[str, float]) -> Tuple[Tuple[str, float], ...]:
        return tuple(sorted(alphas.items()))

    def conversion(self, alphas: Mapping[str, float]) -> Conversion:
        key = self.key(alphas)
        if key not in self.made:
            self.made[key] = self.converter(schedule_names(self.groups, alphas, self.others))
        return self.made[key]

    def macs_ratio(self, alphas: Mapping[str, float]) -> float:
        name = f"macs {ModelProbe(self.key(alphas)).key()}"
        ratio = self.cache.get(name)
        if not isinstance(ratio, float):
            ratio = _macs_ratio(self.conversion(alphas))
            self.cache.update({name: ratio})
        return ratio


class _Variants:
    """The model converted at each candidate alpha, converted when first needed (a cached tuning needs none)."""

    def __init__(self, converter: "_Converter", candidates: Sequence[float], progress: Progress) -> None:
        self.converter, self.candidates, self.progress = converter, candidates, progress
        self.conversions: Dict[float, Conversion] = {}

    def all(self) -> Dict[float, Conversion]:
        for index, alpha in enumerate(self.candidates):
            if alpha not in self.conversions:
                self.progress("converting at each alpha", index, len(self.candidates))
                self.conversions[alpha] = self.converter(alpha)
        self.progress("converting at each alpha", len(self.candidates), len(self.candidates))
        return self.conversions


def _structure(cache: MeasurementCache, variants: _Variants) -> Tuple[List[AlphaGroup], List[GroupCosts], int]:
    """The groups, their MACs at each alpha and the original's MACs: from the cache, else from the variants."""
    saved = cache.get("structure")
    if isinstance(saved, dict):
        groups = [AlphaGroup(name, tuple(writers), tuple(readers)) for name, writers, readers in saved["groups"]]
        costs = [GroupCosts(name, {float(a): macs for a, macs in table.items()}) for name, table in saved["macs"]]
        return groups, costs, saved["base_macs"]
    conversions = variants.all()
    groups = _groups(conversions.values())
    costs = _mac_costs(groups, conversions)
    base_macs = next(iter(conversions.values())).report.original.macs
    cache.update({"structure": {"groups": [[g.name, list(g.writers), list(g.readers)] for g in groups],
                                "macs": [[c.name, {str(a): m for a, m in c.macs.items()}] for c in costs],
                                "base_macs": base_macs}})
    return groups, costs, base_macs


def _options_key(options: Mapping[str, Any]) -> str:
    """The conversion options as text, example inputs by shape and dtype (their values do not matter)."""
    shown = dict(options)
    if shown["example_inputs"] is not None:
        shown["example_inputs"] = [(tuple(x.shape), str(x.dtype)) for x in shown["example_inputs"]]
    return repr(sorted(shown.items()))


def _example_inputs(options: Mapping[str, Any]) -> Tuple[torch.Tensor, ...]:
    """Inputs shaped as the conversion's (``example_inputs``, else ``input_shape``): sizes to measure at."""
    if options["example_inputs"] is not None:
        return tuple(options["example_inputs"])
    return (torch.zeros(tuple(options["input_shape"])),)


def _candidate_alphas(alphas: Sequence[float]) -> List[float]:
    values = sorted({float(a) for a in alphas} - {0.0})
    if not values or not all(0 < a < 1 for a in values):
        raise ValueError(f"alphas are the candidates besides 0, each in (0, 1), such as (0.25, 0.5, 0.75); "
                         f"got {alphas!r}")
    return values


class _Converter:
    """Conversions of one model with the same options; each one's warnings are kept, for the result's to be given."""

    def __init__(self, model: nn.Module, options: Mapping[str, Any]) -> None:
        self.model, self.options = model, options
        self.caught: Dict[int, List[Tuple[Any, type]]] = {}

    def __call__(self, alpha: Any) -> Conversion:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            conversion = convert(self.model, alpha, **self.options)
        self.caught[id(conversion.module)] = [(w.message, w.category) for w in caught]
        return conversion

    def warn(self, conversion: Conversion) -> None:
        """Give the warnings ``conversion`` gave, but that it saves little: the alphas were chosen so."""
        for message, category in self.caught.get(id(conversion.module), []):
            if not issubclass(category, SavingsWarning):
                warnings.warn(message, category, stacklevel=4)


def _macs_ratio(conversion: Conversion) -> float:
    return conversion.report.ratios["macs"]


def _groups(conversions: Iterable[Conversion]) -> List[AlphaGroup]:
    """Every group any candidate conversion found, once (a small class can stay plain at a small alpha)."""
    found: Dict[str, AlphaGroup] = {}
    for conversion in conversions:
        for group in conversion.groups:
            found.setdefault(group.name, group)
    return list(found.values())


def _mac_costs(groups: List[AlphaGroup], variants: Mapping[float, Conversion]) -> List[GroupCosts]:
    """Each group's MACs at alpha 0 (the original's layers) and at each candidate alpha."""
    owner = layer_groups(groups)
    any_variant = next(iter(variants.values()))
    tables = {0.0: any_variant.report.original.layers, **{a: v.report.converted.layers for a, v in variants.items()}}
    macs: Dict[str, Dict[float, int]] = {group.name: {alpha: 0 for alpha in tables} for group in groups}
    for alpha, layers in tables.items():
        for layer in layers:
            if layer.name in owner:
                macs[owner[layer.name]][alpha] += layer.macs
    return [GroupCosts(group.name, macs[group.name]) for group in groups]


def _meet_macs(chooser: Chooser, target: float, estimate: Estimate, base_macs: int,
               schedules: "_Schedules") -> Estimate:
    """The estimate, or where its counted MACs differ from the estimated ones (a layer whose input and output alphas
    differ costs other MACs than either group's table says) by being over ``target`` or more than
    :data:`MAC_SLACK` under it, the choice made again with that error taken off the target, up to
    :data:`MAC_CORRECTIONS` times. Of the schedules tried, the one counted with the most MACs within ``target``
    (else the last)."""
    tried = [estimate]
    limit = target
    for _ in range(MAC_CORRECTIONS):
        counted = schedules.macs_ratio(estimate.alphas)
        error = counted - estimate.macs / base_macs
        if target - MAC_SLACK <= counted <= target or estimate.macs > limit * base_macs or error == 0:
            break  # close enough, a target the choice missed, or an exact estimate: nothing to correct
        limit = target - error
        if not 0 < limit < 1:
            break
        estimate, _ = chooser(limit)
        if any(estimate.alphas == seen.alphas for seen in tried):
            break
        tried.append(estimate)
    within = [e for e in tried if schedules.macs_ratio(e.alphas) <= target]
    return max(within, key=lambda e: schedules.macs_ratio(e.alphas)) if within else tried[-1]


def _check_end_to_end(alphas: Mapping[str, float], costs: List[GroupCosts], measurer: "_Measurer",
                      schedules: "_Schedules") -> Tuple[Dict[str, float], Tuple[float, float], List[str]]:
    """Time the conversion against the original (a freshly measured "slower" is measured twice and averaged); while it
    is slower, the per-layer estimate was wrong somewhere: make plain the octave groups whose estimated saving is
    least (1, then 1, 2, 4... more). Returns the alphas, the (original, converted) seconds and what was changed."""
    alphas = dict(alphas)
    saving = {c.name: c.latency[0.0] - c.latency[alphas[c.name]] for c in costs}
    octave = sorted((name for name, alpha in alphas.items() if alpha > 0), key=lambda name: (saving[name], name))
    corrections: List[str] = []
    dropped = 0
    while True:
        if dropped >= len(octave):
            original = measurer.original_latency()
            if octave:
                corrections.append("every group is plain: the result computes as the original does")
            return alphas, (original, original), corrections
        schedule = _Schedules.key(alphas)

        def network(alphas: Mapping[str, float] = dict(alphas)) -> nn.Module:
            return schedules.conversion(alphas).module
        original, seconds, measured = measurer.whole(schedule, network)
        if measured and seconds > original:  # noise alone can tip a ratio near 1: a second measurement decides too
            again_original, again_seconds, _ = measurer.whole(schedule, network, fresh=True)
            original, seconds = (original + again_original) / 2, (seconds + again_seconds) / 2
            measurer.remember(schedule, original, seconds)
        ratio = seconds / original
        if ratio <= 1:
            return alphas, (original, seconds), corrections
        names = octave[dropped:dropped + max(1, dropped)]
        dropped += len(names)
        corrections.append(f"measured end to end at {ratio:.3f} of the original's latency, slower: made plain "
                           f"{', '.join(names)} (least estimated saving)")
        alphas.update({name: 0.0 for name in names})


def _finish(model: nn.Module, conversion: Conversion, tuning: Tuning,
            measured: Optional[Tuple[Latency, Dict[LayerProbe, float]]]) -> Conversion:
    """The conversion with its tuning, the target note, and when measured the latencies in its report."""
    notes = []
    if tuning.missed:
        notes.append(Note(type(model).__name__, "target", tuning.missed))
        warnings.warn(tuning.missed, TargetWarning, stacklevel=3)
    notes += [Note(type(model).__name__, "tuning", text) for text in tuning.corrections]
    report = dataclasses.replace(conversion.report, notes=conversion.report.notes + notes)
    if measured is not None:
        latency, layer_seconds = measured
        report = _with_latencies(report, latency, layer_seconds, tuning)
    return dataclasses.replace(conversion, report=report, notes=conversion.notes + notes, tuning=tuning)


def _with_latencies(report: Report, latency: Latency, layer_seconds: Mapping[LayerProbe, float],
                    tuning: Tuning) -> Report:
    """The report with the measured whole-network latencies and each measured layer's seconds (the original's at
    alpha 0, the converted's at its group's alpha)."""
    by_layer: Dict[Tuple[str, float], float] = {(probe.layer, probe.alpha): s for probe, s in layer_seconds.items()}
    owner = layer_groups(tuning.groups)

    def timed(layers: List[LayerCost], converted: bool) -> List[LayerCost]:
        result = []
        for layer in layers:
            alpha = tuning.alphas[owner[layer.name]] if converted and layer.name in owner else 0.0
            seconds = by_layer.get((layer.name, alpha)) if layer.name in owner else None
            result.append(dataclasses.replace(layer, latency=seconds) if seconds is not None else layer)
        return result
    return dataclasses.replace(report, latency=latency,
                               original=dataclasses.replace(report.original, layers=timed(report.original.layers, False)),
                               converted=dataclasses.replace(report.converted,
                                                             layers=timed(report.converted.layers, True)))


class _Measurer:
    """Per-layer and whole-network timings, from the cache or measured (and then cached)."""

    def __init__(self, model: nn.Module, variants: _Variants, groups: List[AlphaGroup],
                 example_inputs: Sequence[torch.Tensor], setting: Setting, timer: Timer, cache: MeasurementCache,
                 progress: Progress) -> None:
        self.model, self.variants, self.groups, self.setting = model, variants, groups, setting
        self.timer, self.cache, self.progress = timer, cache, progress
        self.inputs = batch_inputs(example_inputs, setting)
        self.layer_seconds: Dict[LayerProbe, float] = {}

    def layer_costs(self, costs: List[GroupCosts]) -> Tuple[List[GroupCosts], float]:
        """``costs`` with each group's seconds per alpha (the sum over its operations, timed in place), and the
        original's seconds as the sum over all its operations: the frame the estimates are made in, so that they
        compare times measured alike."""
        self.layer_seconds = self._cached_layers()
        if self.layer_seconds is None:
            self.layer_seconds = self._measure_layers()
        totals: Dict[str, Dict[float, float]] = {c.name: {alpha: 0.0 for alpha in c.macs} for c in costs}
        rest = 0.0
        for probe, seconds in self.layer_seconds.items():
            if probe.group == UNGROUPED:
                rest += seconds
            else:
                totals[probe.group][probe.alpha] += seconds
        timed = [dataclasses.replace(c, latency=totals[c.name]) for c in costs]
        return timed, rest + sum(c.latency[0.0] for c in timed)

    def _cached_layers(self) -> Optional[Dict[LayerProbe, float]]:
        listed = self.cache.get("layers")
        if not isinstance(listed, list):
            return None
        probes = [LayerProbe(group, layer, float(alpha)) for group, layer, alpha in listed]
        seconds = {probe: self.cache.get(probe.key()) for probe in probes}
        return seconds if all(isinstance(s, float) for s in seconds.values()) else None

    def _measure_layers(self) -> Dict[LayerProbe, float]:
        owner = layer_groups(self.groups)
        variants = self.variants.all()
        any_variant = next(iter(variants.values()))
        convolutions = [layer.name for layer in any_variant.report.original.layers if layer.alpha_in is not None]
        networks = {0.0: self.model, **{alpha: variant.module for alpha, variant in variants.items()}}
        calls: Dict[str, Dict[LayerProbe, Callable[[], Any]]] = {}
        eager = dataclasses.replace(self.setting, mode="eager")
        for index, (alpha, network) in enumerate(networks.items()):
            self.progress("recording layers", index, len(networks))
            fast, _ = runner(network, eager)
            for group, layers in recorded_layers(fast, self.inputs, owner, convolutions, eager).items():
                for layer, call in layers.items():
                    calls.setdefault(group, {})[LayerProbe(group, layer, alpha)] = call
        measured: Dict[LayerProbe, float] = {}
        names = [group.name for group in self.groups] + [UNGROUPED]
        for index, name in enumerate(names):
            self.progress("timing layers", index, len(names))
            measured.update(self.timer({probe: call for probe, call in calls.get(name, {}).items()
                                        if name != UNGROUPED or probe.alpha == 0}))  # the rest: once, as original
        self.progress("timing layers", len(names), len(names))
        self.cache.update({**{probe.key(): seconds for probe, seconds in measured.items()},
                           "layers": [[probe.group, probe.layer, probe.alpha] for probe in measured]})
        return measured

    def original_latency(self) -> float:
        return self.whole((), None)[0]

    def whole(self, schedule: Tuple[Tuple[str, float], ...], network: Optional[Callable[[], nn.Module]],
              fresh: bool = False) -> Tuple[float, float, bool]:
        """Seconds of the original and of ``network()``, the conversion whose group alphas are ``schedule`` (the
        original again when empty), timed alternately, and whether they were measured now: a pair measured together
        is cached by schedule and read back unless ``fresh``."""
        saved = self.cache.get(ModelProbe(schedule).key())
        if isinstance(saved, list) and len(saved) == 2 and not fresh:
            return saved[0], saved[1], False
        probes = [ModelProbe(())] + ([ModelProbe(schedule)] if schedule else [])
        self.progress("timing the whole network", 0, 1)
        networks = [self.model] + ([network()] if schedule else [])
        functions = {}
        for probe, network in zip(probes, networks):
            run = runner(network, self.setting)[1]
            functions[probe] = lambda run=run: run(self.inputs)
        measured = self.timer(functions)
        self.progress("timing the whole network", 1, 1)
        self.remember(schedule, measured[probes[0]], measured[probes[-1]])
        return measured[probes[0]], measured[probes[-1]], True

    def remember(self, schedule: Tuple[Tuple[str, float], ...], original: float, converted: float) -> None:
        self.cache.update({ModelProbe(schedule).key(): [original, converted]})
