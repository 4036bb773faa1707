"""The alert rules: each a pure function of a resident's recent data, no I/O.

window.py (what a rule sees), limits.py (default thresholds and a doctor's overrides), one module
per rule family (thresholds.py, fever.py, early_warning.py for NEWS2), and table.py, the one table
of them all with `evaluate`.
"""
