"""The admin's one way to write a moment (its pages, and Django's own read-only fields):
2026-12-07 07:08:12 UTC, the zone always named. Django's English default was
"Dec. 7, 2026, 7:08 a.m.", beside "2026-12-07 07:08" elsewhere."""

DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
