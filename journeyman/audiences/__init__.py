"""Audiences: the customers a segment journey reaches, and when.

- `segments.py`: which customers a journey's `entry.segment` matches at a tick, page by
  page, who of them the entry rules let in, and each tick's durable progress.
- `schedules.py`: one Temporal Schedule per segment journey (recurring ticks and
  one-time broadcasts), kept in step with the published plans.

The tick's activity (activities/audience.py) and workflow (workflows/audience.py) sit
above this package; nothing here talks to a worker.
"""
