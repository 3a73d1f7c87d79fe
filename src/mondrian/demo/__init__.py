"""`mondrian demo`: the whole product once, offline (run.py), and what it reports (summary.py)."""
