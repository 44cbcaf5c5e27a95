"""Simulated time: ticks of `tick_minutes`, runs of `days`, and a daily activity cycle.

Every actor reads the same clock. Human activity follows the hour of the day in the actor's
own region (a smooth curve, low at night, high in the working afternoon); automated traffic
is free to ignore it, which is one of the signals a behavioural detector can learn.
"""

from __future__ import annotations

import math

MINUTES_PER_DAY = 24 * 60


class Clock:
    def __init__(self, tick_minutes: int = 10, days: float = 1.0, night_activity: float = 0.15):
        if not isinstance(tick_minutes, int) or not 1 <= tick_minutes <= MINUTES_PER_DAY:
            raise ValueError(f"clock.tick_minutes={tick_minutes!r} must be an integer in 1..{MINUTES_PER_DAY}")
        if not days > 0:
            raise ValueError(f"clock.days={days!r} must be > 0")
        if not 0 <= night_activity <= 1:
            raise ValueError(f"clock.night_activity={night_activity!r} must be in [0, 1]")
        self.tick_minutes, self.days, self.night_activity = tick_minutes, float(days), night_activity
        self.ticks_per_day = max(1, MINUTES_PER_DAY // tick_minutes)
        self.n_ticks = max(1, round(self.days * self.ticks_per_day))
        # the daily cycle, normalised to mean 1 over a day: rates given "per day" stay per day
        raw = [self._raw(h * 24 / self.ticks_per_day) for h in range(self.ticks_per_day)]
        mean = sum(raw) / len(raw)
        self._cycle = [r / mean for r in raw]

    def _raw(self, hour: float) -> float:
        # peak at 15:00, trough at 03:00; `night_activity` is the trough relative to the peak
        peak = 0.5 * (1 + math.cos(2 * math.pi * (hour - 15) / 24))
        return self.night_activity + (1 - self.night_activity) * peak

    def day(self, tick: int) -> int:
        return tick // self.ticks_per_day

    def hour(self, tick: int, utc_offset: int = 0) -> float:
        return ((tick % self.ticks_per_day) * self.tick_minutes / 60 + utc_offset) % 24

    def activity(self, tick: int, utc_offset: int = 0) -> float:
        """The daily cycle at `tick` for an actor `utc_offset` hours from UTC (mean 1 per day)."""
        shift = round(utc_offset * 60 / self.tick_minutes)
        return self._cycle[(tick + shift) % self.ticks_per_day]

    def draw_tick(self, rng, day: int, utc_offset: int = 0) -> int:
        """A tick of `day` drawn from the daily cycle of an actor `utc_offset` hours from UTC
        (rejection sampling): when a person starts a session."""
        first, peak = day * self.ticks_per_day, max(self._cycle)
        while True:
            t = first + rng.randrange(self.ticks_per_day)
            if rng.random() * peak < self.activity(t, utc_offset):
                return t

    def ticks(self, hours: float) -> int:
        """A duration in ticks (at least one)."""
        return max(1, round(hours * 60 / self.tick_minutes))
