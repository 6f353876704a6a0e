from datetime import datetime, timedelta, timezone

import pytest

from aisystant_server import present


@pytest.mark.parametrize("moment, expected", [
    (datetime(2026, 12, 3, 4, 57, 16, 506999, tzinfo=timezone.utc), "2026-12-03T04:57:16.506Z"),
    (datetime(2026, 12, 2, 23, 0, 0, 1000, tzinfo=timezone(timedelta(hours=-5))), "2026-12-03T04:00:00.001Z"),
    (datetime(2026, 12, 3, 4, 57, 16), "2026-12-03T04:57:16.000Z"),
    (datetime(999, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "0999-01-02T03:04:05.000Z"),
    (None, None),
], ids=["utc", "other-zone", "naive-is-utc", "padded", "none"])
def test_a_timestamp_is_iso_8601_utc_to_the_millisecond(moment, expected):
    assert present.timestamp(moment) == expected
    if moment is not None and moment.tzinfo is not None:
        assert datetime.fromisoformat(expected.replace("Z", "+00:00")) == moment.replace(
            microsecond=moment.microsecond // 1000 * 1000)
