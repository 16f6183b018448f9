"""Checks of a schedule's settings beyond types: a standard cron expression that fires on some
date, and a time zone Prefect's schedules take (pure, no I/O but the machine's tzdata)."""

from __future__ import annotations

import functools
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

# (name, lowest, highest, names for values) of the five cron fields.
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
CRON_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    ("day of week", 0, 7, {d: i for i, d in enumerate(_DAYS)}),
)
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # at most (29 February)


def _cron_value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    value = names.get(text.lower()) if not text.isdigit() else int(text)
    if value is None or not low <= value <= high:
        raise ValueError(f"{name} field: {text!r} is not a number from {low} to {high}")
    return value


def check_cron(expression: str) -> str:
    """`expression` if it is a standard 5-field cron expression (*, a-b, a,b, */n, names) that
    fires on some date (not only on, say, 31 February)."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError("must be a 5-field cron expression, e.g. '0 3 * * 1'")
    values = [_cron_field(text, *field) for text, field in zip(fields, CRON_FIELDS, strict=True)]
    # Prefect's scheduler (croniter) never fires such a schedule, whatever the day of week
    # (steps are left to it: it reads "31/2" as every other day)
    if "/" not in fields[2] and not any(min(values[2]) <= _MONTH_DAYS[m - 1] for m in values[3]):
        raise ValueError(
            f"day of month {fields[2]!r} never falls in month {fields[3]!r}: it would never run"
        )
    return expression


def _cron_field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    """The values one cron field names; ValueError naming the field otherwise."""
    found: set[int] = set()
    for part in text.split(","):
        base, slash, step = part.partition("/")
        if slash and not (step.isdigit() and int(step) > 0):
            raise ValueError(f"{name} field: step {step!r} must be a positive whole number")
        first, dash, last = base.partition("-")
        start = low if base == "*" else _cron_value(first, name, low, high, names)
        end = _cron_value(last, name, low, high, names) if dash else start
        if dash and end < start:
            raise ValueError(f"{name} field: range {base!r} runs backwards")
        end = high if base == "*" or (slash and not dash) else end  # "5/10": from 5 to the end
        found.update(range(start, end + 1, int(step) if slash else 1))
    return found


@functools.cache
def _zone_names() -> frozenset[str]:
    """The time zone names this machine lists (a walk of its tzdata: 3 ms, read once)."""
    return frozenset(available_timezones())


def check_timezone(name: str) -> str:
    """`name` if it is an IANA time zone known to this machine (e.g. UTC, Europe/Berlin) and
    to Prefect's schedules, which take only the names `available_timezones()` lists (not the
    files beside them: posix/..., right/..., localtime)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a region's folder
        known = False
    else:
        known = name in _zone_names() and "localtime" not in name
    if not known:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)")
    return name
