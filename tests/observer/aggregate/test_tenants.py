"""Tenant folding: at most max_tenants individual tenants, the rest under `other`, slots freed."""

from __future__ import annotations

from observer import conventions as c
from observer.aggregate import Aggregator, TenantSlots
from observer.config import AggregationSettings
from observer.model import SloSpec

from .records import rec

AVAIL = SloSpec("availability", c.SLI_ERROR, 0.999)


def settings(k: int) -> AggregationSettings:
    return AggregationSettings(max_tenants=k)


def test_tenants_past_k_fold_into_other_and_are_counted() -> None:
    agg = Aggregator(settings(2), (AVAIL,))
    agg.add([rec("a", 990.0), rec("b", 991.0), rec("c", 992.0), rec("d", 993.0, error=True)], 1000.0)
    agg.add([rec("c", 994.0), rec("a", 995.0)], 1000.0)
    stats = {s.tenant: s for s in agg.tenants(60, 1000.0)}
    assert list(stats) == ["a", "b", c.OTHER_TENANT]
    assert stats["a"].requests == 2
    assert stats[c.OTHER_TENANT].requests == 3
    assert stats[c.OTHER_TENANT].errors == 1
    avail = stats[c.OTHER_TENANT].slo["availability"]
    assert (avail.good, avail.total) == (2, 3)
    assert agg.tracked_tenants == 2
    assert agg.tenant("c", 60, 1000.0) is None  # folded tenants have no entry of their own
    tot = agg.totals()
    assert tot.folded == 3
    assert tot.by_tenant_model[(c.OTHER_TENANT, "m1")].requests == 3
    assert ("c", "m1") not in tot.by_tenant_model
    assert tot.by_slo_tenant[("availability", c.OTHER_TENANT)] == (3, 1)


def test_a_tenant_named_other_takes_no_slot() -> None:
    agg = Aggregator(settings(1), ())
    agg.add([rec(c.OTHER_TENANT, 990.0), rec("a", 991.0)], 1000.0)
    assert [s.tenant for s in agg.tenants(60, 1000.0)] == ["a", c.OTHER_TENANT]
    assert agg.totals().folded == 0


def test_slot_is_freed_when_all_data_aged_out_and_decision_is_stable_meanwhile() -> None:
    agg = Aggregator(settings(1), ())
    agg.add([rec("a", 1000.0)], 1000.0)
    agg.add([rec("b", 2000.0)], 2000.0)  # folded: a still holds the only slot
    agg.add([rec("a", 2500.0)], 2500.0)  # a's latest data moves forward: keeps its slot
    agg.expire(4580.0)  # a's 1000 bucket is gone, its 2500 data is not
    agg.add([rec("b", 4590.0)], 4590.0)
    assert agg.tracked_tenants == 1
    assert [s.tenant for s in agg.tenants(3600, 4590.0)] == ["a", c.OTHER_TENANT]
    agg.expire(2460.0 + 3600 + 60)  # everything of a aged out -> slot freed
    assert agg.tracked_tenants == 0
    agg.add([rec("b", 6200.0)], 6200.0)
    assert [s.tenant for s in agg.tenants(60, 6200.0)] == ["b"]
    assert agg.totals().folded == 2


def test_old_records_do_not_claim_a_slot() -> None:
    agg = Aggregator(settings(1), ())
    agg.add([rec("old", 100.0)], 5000.0)  # older than the max window: totals only, folded
    assert agg.tracked_tenants == 0
    assert agg.tracked_models == 0  # nor a model slot
    agg.add([rec("new", 4999.0)], 5000.0)
    assert agg.tracked_tenants == 1
    tot = agg.totals()
    assert tot.by_tenant_model[(c.OTHER_TENANT, c.OTHER_MODEL)].requests == 1
    assert tot.by_tenant_model[("new", "m1")].requests == 1


def test_totals_of_freed_tenants_are_bounded() -> None:
    agg = Aggregator(settings(2), ())
    now = 1000.0
    for i in range(20):  # 20 tenants one after another, each aging out before the next
        now += 3700.0
        agg.add([rec(f"t{i}", now)], now)
    tenants_with_totals = {t for t, _ in agg.totals().by_tenant_model}
    assert len(tenants_with_totals) <= 2 * 2 + 1
    assert agg.tracked_tenants == 1


def test_tenant_slots_unit() -> None:
    slots = TenantSlots(2)
    assert slots.label("a", 10, claim=True) == "a"
    assert slots.label("b", 11, claim=False) is None
    assert slots.label("b", 11, claim=True) == "b"
    assert slots.label("c", 12, claim=True) is None
    assert slots.label("a", 20, claim=True) == "a"
    assert slots.free_before(15) == ["b"]
    assert slots.label("c", 21, claim=True) == "c"
    assert len(slots) == 2
