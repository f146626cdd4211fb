"""What schemathesis must know of the service's contract that JSON Schema cannot say.

Loaded by the fuzz run in `test_serving.py` (`SCHEMATHESIS_HOOKS`). The OpenAPI document says
in words that an outcome's `observed_at` is not in the future (`serving/openapi.py`); here the
generator of `date-time` values is told the same, so that a valid outcome is one the service
must accept. Everything else is generated from the document alone.
"""

from datetime import UTC, datetime, timedelta

import schemathesis
from hypothesis import strategies as st

_PAST = st.datetimes(
    min_value=datetime(1970, 1, 1),
    max_value=datetime.now() - timedelta(days=1),
    timezones=st.just(UTC),
).map(lambda moment: moment.isoformat())

schemathesis.openapi.format("date-time", _PAST)
