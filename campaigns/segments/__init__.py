"""Segments: audiences defined by a rule tree (rules), compiled to one SQL query
over a project's profiles (compiler), whose stored members are kept current as
events arrive and time passes (membership)."""
