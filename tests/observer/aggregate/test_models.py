"""Model folding: at most max_models individual models, the rest under `other`, slots freed —
the tenant-folding rules (test_tenants.py) on their own slots."""

from __future__ import annotations

from observer import conventions as c
from observer.aggregate import Aggregator, LabelSlots, ModelSlots
from observer.config import AggregationSettings
from observer.model import SloSpec

from .records import rec

AVAIL = SloSpec("availability", c.SLI_ERROR, 0.999)


def settings(max_models: int, max_tenants: int = 1000) -> AggregationSettings:
    return AggregationSettings(max_models=max_models, max_tenants=max_tenants)


def test_models_past_m_fold_into_other_and_are_counted() -> None:
    agg = Aggregator(settings(2), (AVAIL,))
    agg.add(
        [
            rec("a", 990.0, model="m1"),
            rec("a", 991.0, model="m2"),
            rec("a", 992.0, model="m3"),
            rec("b", 993.0, model="m4", error=True),
        ],
        1000.0,
    )
    agg.add([rec("a", 994.0, model="m3"), rec("b", 995.0, model="m1")], 1000.0)
    assert agg.tracked_models == 2
    tot = agg.totals()
    assert tot.models_folded == 3
    assert tot.folded == 0
    assert set(tot.by_tenant_model) == {
        ("a", "m1"),
        ("a", "m2"),
        ("a", c.OTHER_MODEL),
        ("b", c.OTHER_MODEL),
        ("b", "m1"),
    }
    assert tot.by_tenant_model[("a", c.OTHER_MODEL)].requests == 2
    assert tot.by_tenant_model[("b", c.OTHER_MODEL)].errors == 1
    # the windows: a model query sees folded models under `other` only
    assert [s.tenant for s in agg.tenants(60, 1000.0, model="m3")] == []
    other = {s.tenant: s.requests for s in agg.tenants(60, 1000.0, model=c.OTHER_MODEL)}
    assert other == {"a": 2, "b": 1}
    assert {s.tenant: s.requests for s in agg.tenants(60, 1000.0)} == {"a": 4, "b": 2}


def test_series_are_bounded_by_both_folds() -> None:
    """Distinct tenants AND models: the (tenant, model) keys stay within (K + 1) x (M + 1)."""
    agg = Aggregator(settings(3, max_tenants=5), ())
    agg.add([rec(f"t{i}", 990.0 + i / 100, model=f"m{i}") for i in range(2000)], 1000.0)
    keys = set(agg.totals().by_tenant_model)
    assert len(keys) <= (5 + 1) * (3 + 1)
    assert keys == {
        ("t0", "m0"),
        ("t1", "m1"),
        ("t2", "m2"),
        ("t3", c.OTHER_MODEL),
        ("t4", c.OTHER_MODEL),
    } | {(c.OTHER_TENANT, c.OTHER_MODEL)}
    assert agg.tracked_models == 3
    assert agg.totals().models_folded == 1997


def test_a_model_named_other_takes_no_slot() -> None:
    agg = Aggregator(settings(1), ())
    agg.add([rec("a", 990.0, model=c.OTHER_MODEL), rec("a", 991.0, model="m1")], 1000.0)
    assert agg.tracked_models == 1
    assert set(agg.totals().by_tenant_model) == {("a", c.OTHER_MODEL), ("a", "m1")}
    assert agg.totals().models_folded == 0


def test_model_slot_is_freed_when_all_data_aged_out_and_decision_is_stable_meanwhile() -> None:
    agg = Aggregator(settings(1), ())
    agg.add([rec("a", 1000.0, model="m1")], 1000.0)
    agg.add([rec("a", 2000.0, model="m2")], 2000.0)  # folded: m1 still holds the only slot
    agg.add([rec("a", 2500.0, model="m1")], 2500.0)  # m1's latest data moves forward: keeps its slot
    agg.expire(4580.0)  # m1's 1000 bucket is gone, its 2500 data is not
    agg.add([rec("a", 4590.0, model="m2")], 4590.0)
    assert agg.tracked_models == 1
    assert [s.requests for s in agg.tenants(3600, 4590.0, model="m1")] == [1]
    assert [s.requests for s in agg.tenants(3600, 4590.0, model=c.OTHER_MODEL)] == [2]  # both m2
    agg.expire(2460.0 + 3600 + 60)  # everything of m1 aged out -> slot freed
    assert agg.tracked_models == 0
    agg.add([rec("a", 6200.0, model="m2")], 6200.0)
    assert [s.requests for s in agg.tenants(60, 6200.0, model="m2")] == [1]
    assert agg.totals().models_folded == 2


def test_totals_of_freed_models_are_bounded() -> None:
    agg = Aggregator(settings(2), ())
    now = 1000.0
    for i in range(20):  # 20 models one after another, each aging out before the next
        now += 3700.0
        agg.add([rec("a", now, model=f"m{i}")], now)
    models_with_totals = {m for _, m in agg.totals().by_tenant_model}
    assert len(models_with_totals) <= 3 * 2 + 1
    assert agg.tracked_models == 1


def test_model_slots_unit() -> None:
    slots = ModelSlots(2)
    assert slots.max_models == 2
    assert slots.label("m1", 10, claim=True) == "m1"
    assert slots.label("m2", 11, claim=False) is None
    assert slots.label(c.OTHER_MODEL, 11, claim=True) == c.OTHER_MODEL
    assert slots.label("m2", 11, claim=True) == "m2"
    assert slots.label("m3", 12, claim=True) is None
    assert slots.label("m1", 20, claim=True) == "m1"
    assert slots.free_before(15) == ["m2"]
    assert slots.label("m3", 21, claim=True) == "m3"
    assert len(slots) == 2
    assert isinstance(slots, LabelSlots)
