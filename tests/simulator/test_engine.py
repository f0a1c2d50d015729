from simulator.engine import Simulation


def test_events_run_in_time_then_schedule_order() -> None:
    sim = Simulation(start=100.0)
    seen: list[tuple[float, str]] = []
    sim.at(105.0, lambda: seen.append((sim.now, "b")))
    sim.at(102.0, lambda: seen.append((sim.now, "a")))
    sim.at(105.0, lambda: seen.append((sim.now, "c")))
    assert sim.next_event_time() == 102.0
    sim.run_until(104.0)
    assert seen == [(102.0, "a")]
    assert sim.now == 104.0
    sim.run(10.0)
    assert seen == [(102.0, "a"), (105.0, "b"), (105.0, "c")]
    assert sim.now == 114.0
    assert sim.next_event_time() is None
    assert not sim.step()


def test_events_scheduled_while_running_and_past_is_clamped() -> None:
    sim = Simulation()
    seen: list[float] = []

    def tick() -> None:
        seen.append(sim.now)
        if sum(1 for x in seen if x > 0) < 3:
            sim.after(1.5, tick)
        sim.at(-5.0, lambda: seen.append(-sim.now))  # the past means now

    sim.at(1.0, tick)
    while sim.step():
        pass
    assert seen == [1.0, -1.0, 2.5, -2.5, 4.0, -4.0]
    assert sim.steps == 6  # 3 ticks + 3 clamped events
