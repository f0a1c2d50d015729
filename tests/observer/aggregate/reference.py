"""The aggregator's `add` before the hot-path rewrite (commit 1fc8c7b), kept verbatim as the oracle
of test_equivalence.py and the A side of `benchmarks/pipeline_stages_bench.py --reference`.
Only `_add` differs from `Aggregator`: the state (buckets, cells, totals, slots) is shared.
Do not optimise this file. (Model folding, added later, is written here record by record with the
same rules as the tenant's.)"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from operator import attrgetter

from observer import conventions as c
from observer.aggregate import Aggregator, QuantileSketch
from observer.aggregate.windows import _Cell, _Total
from observer.model import RequestRecord, SloSpec

_latencies = attrgetter(*c.LATENCY_METRICS)
_tiers = attrgetter(*c.TIERS)

Key = tuple[str, str]
_CompiledSlo = tuple[int, str | None, float, frozenset[str] | None]


def _compile_reference(slos: Sequence[SloSpec]) -> tuple[_CompiledSlo, ...]:
    out: list[_CompiledSlo] = []
    for i, s in enumerate(slos):
        attr = None if s.sli == c.SLI_ERROR else s.sli
        thr = s.threshold_seconds if s.threshold_seconds is not None else math.inf
        out.append((i, attr, thr, frozenset(s.tenants) if s.tenants else None))
    return tuple(out)


class ReferenceAggregator(Aggregator):
    """`Aggregator` with the one-record-at-a-time `_add` of before."""

    def _add(self, records: Iterable[RequestRecord], now: float, totals: bool) -> None:
        fine_w = self._fine_w
        coarse_w = self._coarse_w
        frontier = self._frontier
        min_start = now - self._max_window
        fine = self._fine
        coarse = self._coarse
        last = self._slots.last
        max_tenants = self._slots.max_tenants
        model_last = self._model_slots.last
        max_models = self._model_slots.max_models
        compiled = _compile_reference(self.slos)
        n_slo = len(compiled)
        tot = self._totals
        alpha = self._alpha
        max_bins = self._max_bins
        other = c.OTHER_TENANT
        for r in records:
            end = r.end_time
            if end > now:
                end = now
            ci = int(end // coarse_w)
            in_window = ci * coarse_w >= min_start
            tenant = r.tenant
            prev = last.get(tenant)
            if prev is not None:
                label = tenant
                if ci > prev and in_window:
                    last[tenant] = ci
            elif tenant == other:
                label = other
            elif in_window and len(last) < max_tenants:
                last[tenant] = ci
                label = tenant
            else:
                label = other
                if totals:
                    self._folded += 1
            model = r.model
            mprev = model_last.get(model)
            if mprev is not None:
                model_label = model
                if ci > mprev and in_window:
                    model_last[model] = ci
            elif model == c.OTHER_MODEL:
                model_label = model
            elif in_window and len(model_last) < max_models:
                model_last[model] = ci
                model_label = model
            else:
                model_label = c.OTHER_MODEL
                if totals:
                    self._models_folded += 1
            key = (label, model_label)
            err = r.error
            cached = _tiers(r.cached)

            # SLO judgements (same rules as observer.slo.judge, inlined for speed)
            judged: list[tuple[int, bool]] = []
            for j, attr, thr, tenants in compiled:
                if tenants is not None and tenant not in tenants:
                    continue
                if attr is None:
                    judged.append((j, not err))
                elif not err:
                    v = getattr(r, attr)
                    if v is not None:
                        judged.append((j, v <= thr))

            if totals:
                t = tot.get(key)
                if t is None:
                    t = tot[key] = _Total(n_slo)
                    self._totals_tenants.add(label)
                    self._totals_models.add(model_label)
                t.requests += 1
                t.prompt += r.prompt_tokens
                t.output += r.output_tokens
                if err:
                    t.errors += 1
                tc = t.cached
                for i, n in enumerate(cached):
                    if n:
                        tc[i] += n
                ts = t.slo
                for j, good in judged:
                    ts[2 * j + 1] += 1
                    if good:
                        ts[2 * j] += 1

            if not in_window:
                continue
            fi = int(end // fine_w)
            if fi * fine_w >= frontier:
                bucket = fine.get(fi)
                if bucket is None:
                    bucket = fine[fi] = {}
            else:
                bucket = coarse.get(ci)
                if bucket is None:
                    bucket = coarse[ci] = {}
            cell = bucket.get(key)
            if cell is None:
                cell = bucket[key] = _Cell(n_slo)
            cell.requests += 1
            cell.prompt += r.prompt_tokens
            cell.output += r.output_tokens
            if err:
                cell.errors += 1
            cc = cell.cached
            for i, n in enumerate(cached):
                if n:
                    cc[i] += n
            sketches = cell.sketches
            for i, v in enumerate(_latencies(r)):
                if v is not None:
                    sk = sketches[i]
                    if sk is None:
                        sk = sketches[i] = QuantileSketch(alpha, max_bins)
                    try:  # noqa: SIM105 - hot path: try is free, suppress() is not
                        sk.add(v)
                    except ValueError:  # NaN / infinity: not a latency, skip it
                        pass
            cs = cell.slo
            for j, good in judged:
                cs[2 * j + 1] += 1
                if good:
                    cs[2 * j] += 1
