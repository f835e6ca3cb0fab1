"""The performance bench (issue 13; docs/performance.md): the real stack as processes on this
machine, refunds against a no-op baseline workflow run alongside them, figures as ratios.

Development only: nothing in ``refundflow`` imports it. ``make bench`` / ``make bench-quick``."""
