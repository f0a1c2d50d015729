"""Fleet signals: pure functions of (records/tenant stats, samples, config, now) -> frozen
results with evidence. See docs/signals.md, section "Fleet signals"."""
