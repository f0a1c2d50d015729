"""Sliding windows over request end times, per (tenant, model): the `Aggregator`.

How it works (docs/signals.md, "Windows, quantiles and SLOs"):

* A record lands in the bucket of its END time; an end time after `now` (clock skew) counts at
  `now`. Fine buckets (`fine_bucket_seconds`, 10 s) hold the last `fine_horizon_seconds` (300 s);
  when a fine bucket's start falls before ``now - fine_horizon`` it is merged into its coarse
  bucket (`coarse_bucket_seconds`, 60 s; a multiple of the fine width). A coarse bucket whose start
  falls before ``now - max_window`` is dropped. A late record whose fine bucket was already merged
  goes straight to its coarse bucket; a record older than the max window only hits the totals.
* A query for window W (0 < W <= max window) reads fine buckets when W <= fine_horizon, and
  includes every bucket whose start >= now - W. Otherwise it reads coarse granularity: every piece
  of data whose coarse bucket start >= now - W (merged or still fine). The window edge therefore
  moves in steps of the bucket width: a query covers between W - width and W seconds of end times.
  Queries assume `now` does not go backwards relative to the last `add`/`expire`.
* Each bucket holds, per (tenant label, model label): requests, prompt/output tokens, cached
  tokens per tier, errors, one quantile sketch per latency metric (only non-None values) and
  per-SLO good/total counts. Tenants past `max_tenants` fold to `other`, models past `max_models`
  to `other` (same rules, independently; observer/aggregate/tenants.py), and a slot is freed only
  once all its data left the windows, so the live buckets hold at most
  (max_tenants + 1) x (max_models + 1) cells each. The cumulative totals (the exported counters)
  also keep recently freed tenants / models until pruned (`_prune_totals`): at most
  3 x max_tenants + 1 tenant labels and 3 x max_models + 1 model labels.

Pure: time is passed in; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from operator import attrgetter

from observer import conventions as c
from observer.aggregate.sketch import QuantileSketch
from observer.aggregate.tenants import (
    QUANTILE_LEVELS,
    ModelSlots,
    Quantiles,
    SloStatus,
    TenantModelTotals,
    TenantSlots,
    TenantStats,
    Totals,
)
from observer.config import AggregationSettings
from observer.model import RequestRecord, SloSpec, TierTokens
from observer.slo import attainment, burn_rate, validate_slos

_N_TIERS = len(c.TIERS)
_N_METRICS = len(c.LATENCY_METRICS)
_latencies = attrgetter(*c.LATENCY_METRICS)
_tiers = attrgetter(*c.TIERS)

Key = tuple[str, str]  # (tenant label, model label)
_CompiledSlo = tuple[int, int, int, float, frozenset[str] | None]
if _N_TIERS != 5:  # pragma: no cover - `_add` unrolls the tiers
    raise ImportError("observer.aggregate.windows assumes 5 KV tiers")


class _Cell:
    """Counters of one (tenant label, model) in one bucket."""

    __slots__ = ("cached", "errors", "output", "prompt", "requests", "rows", "sketches", "slo")

    def __init__(self, n_slo: int) -> None:
        self.requests = 0
        self.prompt = 0
        self.output = 0
        self.errors = 0
        self.cached = [0] * _N_TIERS
        self.sketches: list[QuantileSketch | None] = [None] * _N_METRICS
        self.slo = [0] * (2 * n_slo)  # [good_0, total_0, good_1, total_1, ...]
        # latency tuples of this `add` call not yet in the sketches (None outside `Aggregator._add`)
        self.rows: list[tuple[float | None, ...]] | None = None

    def flush(self, alpha: float, max_bins: int) -> None:
        """Count the pending latency rows into the sketches, column by column (one sketch at a
        time: its bins stay in cache). Per sketch, values keep their record order."""
        rows = self.rows
        if rows is None:
            return
        self.rows = None
        sketches = self.sketches
        for i, col in enumerate(zip(*rows, strict=True)):
            sk = sketches[i]
            if sk is None:
                if col.count(None) == len(col):
                    continue
                sk = sketches[i] = QuantileSketch(alpha, max_bins)
            sk.add_values(col)

    def merge(self, other: _Cell) -> None:
        self.requests += other.requests
        self.prompt += other.prompt
        self.output += other.output
        self.errors += other.errors
        for i, n in enumerate(other.cached):
            self.cached[i] += n
        for i, sk in enumerate(other.sketches):
            if sk is not None:
                mine = self.sketches[i]
                if mine is None:
                    self.sketches[i] = sk.copy()
                else:
                    mine.merge(sk)
        for i, n in enumerate(other.slo):
            self.slo[i] += n


class _Total:
    """Cumulative counters of one (tenant label, model) since process start."""

    __slots__ = ("cached", "errors", "output", "prompt", "requests", "slo")

    def __init__(self, n_slo: int) -> None:
        self.requests = 0
        self.prompt = 0
        self.output = 0
        self.errors = 0
        self.cached = [0] * _N_TIERS
        self.slo = [0] * (2 * n_slo)


def _compile(slos: Sequence[SloSpec]) -> tuple[_CompiledSlo, ...]:
    """SLOs as tuples for the hot path: (index of the total counter, index of the good counter,
    index of the latency in `c.LATENCY_METRICS` or -1 for availability, threshold, tenants)."""
    out: list[_CompiledSlo] = []
    for i, s in enumerate(slos):
        metric = -1 if s.sli == c.SLI_ERROR else c.LATENCY_METRICS.index(s.sli)
        thr = s.threshold_seconds if s.threshold_seconds is not None else math.inf
        out.append((2 * i + 1, 2 * i, metric, thr, frozenset(s.tenants) if s.tenants else None))
    return tuple(out)


class Aggregator:
    """Per-tenant sliding windows, quantile sketches, SLO counters and cumulative totals."""

    def __init__(self, settings: AggregationSettings, slos: Sequence[SloSpec]) -> None:
        self._settings = settings
        self._fine_w = settings.fine_bucket_seconds
        self._coarse_w = settings.coarse_bucket_seconds
        self._ratio = self._coarse_w // self._fine_w
        self._max_window = settings.max_window_seconds
        self._horizon = min(settings.fine_horizon_seconds, self._max_window)
        self._alpha = settings.sketch_relative_accuracy
        self._max_bins = settings.sketch_max_bins
        self._slos: tuple[SloSpec, ...] = validate_slos(slos)
        self._compiled = _compile(self._slos)
        self._fine: dict[int, dict[Key, _Cell]] = {}
        self._coarse: dict[int, dict[Key, _Cell]] = {}
        self._frontier = -math.inf  # fine buckets starting before this have been merged into coarse
        self._next_expire = -math.inf
        self._last_expire = -math.inf
        self._slots = TenantSlots(settings.max_tenants)
        self._model_slots = ModelSlots(settings.max_models)
        self._totals: dict[Key, _Total] = {}
        self._totals_tenants: set[str] = set()
        self._totals_models: set[str] = set()
        self._folded = 0
        self._models_folded = 0

    # ------------------------------------------------------------------ properties
    @property
    def slos(self) -> tuple[SloSpec, ...]:
        return self._slos

    @property
    def tracked_tenants(self) -> int:
        """Tenants holding an individual slot (`other` excluded)."""
        return len(self._slots)

    @property
    def folded(self) -> int:
        return self._folded

    @property
    def tracked_models(self) -> int:
        """Models holding an individual slot (`other` excluded)."""
        return len(self._model_slots)

    @property
    def models_folded(self) -> int:
        return self._models_folded

    # ------------------------------------------------------------------ ingest (hot path)
    def add(self, records: Iterable[RequestRecord], now: float) -> None:
        """Count records (windows by end time, plus cumulative totals)."""
        if now >= self._next_expire:
            self.expire(now)
        self._add(records, now, totals=True)

    def _add(self, records: Iterable[RequestRecord], now: float, totals: bool) -> None:
        touched: list[_Cell] = []
        try:
            self._count(records, now, totals, touched)
        finally:  # even if a record is malformed: the rows counted so far reach the sketches
            alpha = self._alpha
            max_bins = self._max_bins
            for cell in touched:
                cell.flush(alpha, max_bins)

    def _count(
        self, records: Iterable[RequestRecord], now: float, totals: bool, touched: list[_Cell]
    ) -> None:
        """The per-record part of `_add`: counters, SLO judgements, tenant slots; the latency
        tuples wait in `cell.rows` (cells listed in `touched`) for `_add` to count them."""
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
        other_model = c.OTHER_MODEL
        compiled = self._compiled
        n_slo = len(compiled)
        tot = self._totals
        other = c.OTHER_TENANT
        latencies = _latencies
        tiers = _tiers
        sink = [0] * (2 * n_slo)  # SLO counters of a record outside the windows / not totalled
        for r in records:
            end = r.end_time
            if end > now:  # noqa: PLR1730 - hot path
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
            model = r.model  # the same folding rules as the tenant's, on their own slots
            prev = model_last.get(model)
            if prev is not None:
                if ci > prev and in_window:
                    model_last[model] = ci
            elif model == other_model:
                pass
            elif in_window and len(model_last) < max_models:
                model_last[model] = ci
            else:
                model = other_model
                if totals:
                    self._models_folded += 1
            key = (label, model)
            err = r.error
            prompt = r.prompt_tokens
            output = r.output_tokens
            ch0, ch1, ch2, ch3, ch4 = tiers(r.cached)
            lats = latencies(r)

            if totals:
                t = tot.get(key)
                if t is None:
                    t = tot[key] = _Total(n_slo)
                    self._totals_tenants.add(label)
                    self._totals_models.add(model)
                t.requests += 1
                t.prompt += prompt
                t.output += output
                if err:
                    t.errors += 1
                tc = t.cached
                tc[0] += ch0
                tc[1] += ch1
                tc[2] += ch2
                tc[3] += ch3
                tc[4] += ch4
                ts = t.slo
            else:
                ts = sink

            if in_window:
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
                cell.prompt += prompt
                cell.output += output
                if err:
                    cell.errors += 1
                cc = cell.cached
                cc[0] += ch0
                cc[1] += ch1
                cc[2] += ch2
                cc[3] += ch3
                cc[4] += ch4
                rows = cell.rows
                if rows is None:
                    cell.rows = [lats]
                    touched.append(cell)
                else:
                    rows.append(lats)
                cs = cell.slo
            else:
                cs = sink

            # SLO judgements: the rules of observer.slo.judge, inlined
            for total_i, good_i, metric_i, thr, tenants in compiled:
                if tenants is not None and tenant not in tenants:
                    continue
                if metric_i < 0:
                    ts[total_i] += 1
                    cs[total_i] += 1
                    if not err:
                        ts[good_i] += 1
                        cs[good_i] += 1
                elif not err:
                    v = lats[metric_i]
                    if v is not None:
                        ts[total_i] += 1
                        cs[total_i] += 1
                        if v <= thr:
                            ts[good_i] += 1
                            cs[good_i] += 1

    # ------------------------------------------------------------------ maintenance
    def expire(self, now: float) -> None:
        """Merge fine buckets past the fine horizon, drop buckets past the max window, free slots."""
        if now < self._last_expire:
            return
        self._last_expire = now
        fine_w, coarse_w = self._fine_w, self._coarse_w
        threshold = now - self._horizon
        for fi in [fi for fi in self._fine if fi * fine_w < threshold]:
            bucket = self._fine.pop(fi)
            ci = fi // self._ratio
            target = self._coarse.get(ci)
            if target is None:
                self._coarse[ci] = bucket
                continue
            for key, cell in bucket.items():
                mine = target.get(key)
                if mine is None:
                    target[key] = cell
                else:
                    mine.merge(cell)
        self._frontier = max(self._frontier, math.ceil(threshold / fine_w) * fine_w)
        min_start = now - self._max_window
        for ci in [ci for ci in self._coarse if ci * coarse_w < min_start]:
            del self._coarse[ci]
        # first coarse index still kept: ceil(min_start / coarse_w)
        first_kept = math.ceil(min_start / coarse_w)
        self._slots.free_before(first_kept)
        self._model_slots.free_before(first_kept)
        self._prune_totals()
        self._next_expire = (math.floor(now / fine_w) + 1) * fine_w

    def _prune_totals(self) -> None:
        """Keep totals of at most 2 x max_tenants + 1 tenants (and 2 x max_models + 1 models) after
        an expiry: past that, drop those of tenants (models) without a slot. Between two expiries
        only slot holders and `other` add totals, hence the 3 x max + 1 bound of the module doc."""
        if len(self._totals_tenants) > 2 * self._slots.max_tenants + 1:
            keep = self._slots.last
            drop = {t for t in self._totals_tenants if t not in keep and t != c.OTHER_TENANT}
            for key in [k for k in self._totals if k[0] in drop]:
                del self._totals[key]
            self._totals_tenants -= drop
        if len(self._totals_models) > 2 * self._model_slots.max_models + 1:
            keep = self._model_slots.last
            drop = {m for m in self._totals_models if m not in keep and m != c.OTHER_MODEL}
            for key in [k for k in self._totals if k[1] in drop]:
                del self._totals[key]
            self._totals_models -= drop

    def set_slos(self, slos: Sequence[SloSpec], records: Iterable[RequestRecord], now: float) -> None:
        """Replace the SLO set and rebuild the windows from `records` (those of the last max window).

        Windows are cleared and rebuilt exactly; tenants keep their slots (free slots go to new
        tenants in record order); totals are not re-counted, except that the cumulative SLO
        counters of SLOs that are new or whose definition changed restart at zero (a counter reset
        for Prometheus) and those of removed SLOs are dropped.
        """
        new = validate_slos(slos)
        old = {s.name: (i, s) for i, s in enumerate(self._slos)}
        n_new = len(new)
        for t in self._totals.values():
            fresh = [0] * (2 * n_new)
            for j, s in enumerate(new):
                prev = old.get(s.name)
                if prev is not None and prev[1] == s:
                    i = prev[0]
                    fresh[2 * j], fresh[2 * j + 1] = t.slo[2 * i], t.slo[2 * i + 1]
            t.slo = fresh
        self._slos = new
        self._compiled = _compile(new)
        self._fine.clear()
        self._coarse.clear()
        self._frontier = -math.inf
        self._last_expire = -math.inf
        self.expire(now)
        self._add(records, now, totals=False)

    # ------------------------------------------------------------------ queries
    def _window_buckets(self, window_seconds: int, now: float) -> Iterator[dict[Key, _Cell]]:
        if not 0 < window_seconds <= self._max_window:
            raise ValueError(f"window must be within (0, {self._max_window}] seconds, got {window_seconds}")
        start = now - window_seconds
        if window_seconds <= self._horizon:
            fine_w = self._fine_w
            for fi, bucket in self._fine.items():
                if fi * fine_w >= start:
                    yield bucket
            return
        coarse_w, ratio = self._coarse_w, self._ratio
        for ci, bucket in self._coarse.items():
            if ci * coarse_w >= start:
                yield bucket
        for fi, bucket in self._fine.items():
            if (fi // ratio) * coarse_w >= start:
                yield bucket

    def _collect(
        self, window_seconds: int, now: float, model: str | None, only: str | None
    ) -> dict[str, _Cell]:
        acc: dict[str, _Cell] = {}
        n_slo = len(self._slos)
        for bucket in self._window_buckets(window_seconds, now):
            for (label, m), cell in bucket.items():
                if (model is not None and m != model) or (only is not None and label != only):
                    continue
                mine = acc.get(label)
                if mine is None:
                    mine = acc[label] = _Cell(n_slo)
                mine.merge(cell)
        return acc

    def tenants(self, window_seconds: int, now: float, model: str | None = None) -> tuple[TenantStats, ...]:
        """Every tenant label (tracked tenants and `other`) with data in the window, sorted."""
        acc = self._collect(window_seconds, now, model, None)
        return tuple(self._stats(t, acc[t]) for t in sorted(acc))

    def tenant(
        self, tenant: str, window_seconds: int, now: float, model: str | None = None
    ) -> TenantStats | None:
        """One tenant label's stats, None when it has no data in the window."""
        acc = self._collect(window_seconds, now, model, tenant)
        cell = acc.get(tenant)
        return None if cell is None else self._stats(tenant, cell)

    def _stats(self, tenant: str, cell: _Cell) -> TenantStats:
        cached = TierTokens(*cell.cached)
        total_cached = cached.total
        quantiles = {}
        for name, sk in zip(c.LATENCY_METRICS, cell.sketches, strict=True):
            quantiles[name] = Quantiles(*sk.quantiles(QUANTILE_LEVELS)) if sk is not None else Quantiles()
        slo: dict[str, SloStatus] = {}
        for j, spec in enumerate(self._slos):
            good, total = cell.slo[2 * j], cell.slo[2 * j + 1]
            if total == 0 and not spec.applies_to(tenant):
                continue
            att = attainment(good, total)
            slo[spec.name] = SloStatus(good, total, att, burn_rate(att, spec.objective), spec.objective)
        return TenantStats(
            tenant=tenant,
            requests=cell.requests,
            prompt_tokens=cell.prompt,
            output_tokens=cell.output,
            cached=cached,
            errors=cell.errors,
            prefix_hit_rate=total_cached / cell.prompt if cell.prompt else None,
            tier_shares=(
                {tier: n / total_cached for tier, n in zip(c.TIERS, cell.cached, strict=True)}
                if total_cached
                else None
            ),
            quantiles=quantiles,
            slo=slo,
        )

    def totals(self) -> Totals:
        """Cumulative counters since process start (labels already folded)."""
        by_tm: dict[Key, TenantModelTotals] = {}
        by_slo: dict[Key, tuple[int, int]] = {}
        for (label, model), t in self._totals.items():
            by_tm[(label, model)] = TenantModelTotals(
                t.requests, t.prompt, t.output, TierTokens(*t.cached), t.errors
            )
            for j, spec in enumerate(self._slos):
                good, total = t.slo[2 * j], t.slo[2 * j + 1]
                if total == 0 and (spec.name, label) not in by_slo:
                    continue
                prev_total, prev_bad = by_slo.get((spec.name, label), (0, 0))
                by_slo[(spec.name, label)] = (prev_total + total, prev_bad + total - good)
        return Totals(
            by_tenant_model=by_tm,
            by_slo_tenant=by_slo,
            folded=self._folded,
            models_folded=self._models_folded,
        )
