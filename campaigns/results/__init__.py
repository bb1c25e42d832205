"""Campaign results (issue 15): counters kept from delivery's outcomes and the
ingest workers' stored events (counters.py, attribution.py), the statistics
(statistics.py), the A/B decision (decision.py) and the report built from the
counters (report.py)."""
