"""Typed records, errors, events, config, judge and metrics: what every layer shares (stdlib only)."""
