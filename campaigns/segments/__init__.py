"""Segments: audiences defined by a rule tree (rules), compiled to one SQL query
over a project's profiles (compiler), whose stored members are kept current as
events arrive and time passes (membership); buckets: the stable 0-999 bucket
of a profile, shared with campaign control groups. The grammar: docs/segments.md."""
