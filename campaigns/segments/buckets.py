"""A stable bucket 0-999 per profile, the same in Python and in SQL.

Segments use it for sampling (`{"bucket": {"op": "between", "value": [0, 99]}}`
is a stable 10 % of the profiles); campaigns (issue 14) use the same formula for
control groups and the system control group, with a salt naming the campaign so
that each campaign holds out a different, independent set of profiles.

The formula: the first 8 hex digits of md5(salt + the profile id in decimal),
read as an unsigned 32-bit integer, modulo 1000. md5 is not used for security
here, only because PostgreSQL has it built in, so that SQL and Python agree
without an extension.
"""

from __future__ import annotations

import hashlib

from django.db.models import F, Func, IntegerField, TextField, Value
from django.db.models.functions import Cast

BUCKETS = 1000


def profile_bucket(profile_id: int, salt: str = "") -> int:
    """The bucket (0-999) of `profile_id` for `salt`; equal to bucket_sql's value."""
    digest = hashlib.md5(f"{salt}{profile_id}".encode(), usedforsecurity=False).hexdigest()
    return int(digest[:8], 16) % BUCKETS


class _Bucket(Func):
    # ('x' || 8 hex digits)::bit(32)::bigint reads them as an unsigned 32-bit number;
    # mod() rather than the % operator, which would need escaping for the driver.
    template = "mod(('x' || substr(md5(%(expressions)s), 1, 8))::bit(32)::bigint, " + str(BUCKETS) + ")"
    arg_joiner = " || "
    output_field = IntegerField()


def bucket_sql(salt: str = "", profile_id_field: str = "pk") -> Func:
    """The SQL expression of profile_bucket(<profile_id_field>, salt), for
    annotate() / filter() on a queryset whose `profile_id_field` is the profile id
    (crm.Profile: "pk"; a membership table: "profile_id")."""
    return _Bucket(Value(salt, output_field=TextField()), Cast(F(profile_id_field), output_field=TextField()))
