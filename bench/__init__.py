"""certwidget's benchmarks: ``python -m bench`` (all, ~3-4 minutes) or ``python -m bench --quick``.

Each benchmark runs the thing and its baseline in the same process, in alternating rounds, and
prints medians, the ratio and whether its goal is met; a table of all results comes last.
"""
