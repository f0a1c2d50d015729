"""Burn-rate window sets (YAML data files), a package so that they ship in the wheel."""
