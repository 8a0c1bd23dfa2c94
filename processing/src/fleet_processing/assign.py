"""Which trip a bus is driving, from its recent fixes, when its frames do not say.

Candidates come from the network's spatial index (shapes near the newest
fix) crossed with the instances running at that time, so the cost follows
the trips nearby, not the size of the feed. Each candidate shape is tried
from every stretch the oldest recent fix is near (both legs of an
out-and-back, both ends of a loop) and followed fix by fix with the windowed
projection: the wrong leg or the wrong direction makes no progress along the
line and is dropped. The survivors are scored by how near the fixes are to
the line and how well the schedule agrees at the bus's position (falling
off as exp(-|delay| / schedule_scale_s)); the confidence is the best score's
relative lead over the runner-up times its nearness to the line, so two
trips that fit as well (a bus halfway between two departures of a frequent
line) are not told apart by luck, while an hourly intercity bus 20 minutes
late is still confidently its own trip.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from fleet_processing.locate import locate, near_runs
from fleet_processing.network import Network
from fleet_processing.plan import Floats, Ints, TripInstance
from fleet_processing.policy import ProgressPolicy
from fleet_processing.schedule import delay_s, scheduled_window

ActiveByShape = dict[int, list[tuple[int, TripInstance]]]
"""shape index -> (plan index, instance) of every instance running now on it"""


@dataclass(frozen=True, slots=True)
class Guess:
    """A trip instance a bus may be driving, where it is on it, and how sure that is."""

    plan: int
    instance: TripInstance
    along_m: float
    off_m: float
    delay_s: float
    score: float
    confidence: float
    speed_mps: float


def active_by_shape(net: Network, instances: list[TripInstance]) -> ActiveByShape:
    """Group running instances by their shape's index."""
    grouped: ActiveByShape = {}
    for instance in instances:
        plan = net.plan_index[instance.plan.trip_id]
        grouped.setdefault(int(net.plan_shape[plan]), []).append((plan, instance))
    return grouped


def _base_ms(instance: TripInstance) -> int:
    return instance.origin_ms + instance.offset_s * 1000


def _schedule_scores(
    net: Network,
    options: list[tuple[int, TripInstance]],
    along_m: float,
    time_ms: int,
    policy: ProgressPolicy,
) -> tuple[Floats, Floats]:
    plans = np.array([p for p, _ in options], dtype=np.int64)
    along = np.full(len(options), along_m)
    lo, hi = scheduled_window(net, plans, along, policy.stop_radius_m)
    base = np.array([_base_ms(i) for _, i in options], dtype=np.int64)
    late = delay_s(np.full(len(options), time_ms, dtype=np.int64), base, lo, hi)
    fit = np.where(np.abs(late) <= policy.max_delay_s, np.exp(-np.abs(late) / policy.schedule_scale_s), 0.0)
    return late, fit


def _follow(
    net: Network,
    shape: Ints,
    start_m: Floats,
    times: Ints,
    x: Floats,
    y: Floats,
    acc: Floats,
    policy: ProgressPolicy,
) -> tuple[Floats, Floats, Floats, Floats]:
    """Follow every (shape, start) through the fixes: moved along, mean off, last along, last off.

    One vectorized projection of every (try, fix) pair, each fix within reach of the start at the
    network's top speed, then a running maximum: the monotone filter of ``advance_batch`` in one pass.
    """
    n, m = len(shape), len(times)
    reach = policy.max_speed_mps * np.maximum(times - times[0], 0) / 1000.0
    lo = start_m[:, None] - acc[0] - 2 * acc[None, :]
    hi = start_m[:, None] + reach[None, :] + acc[0] + 2 * acc[None, :]
    got, off = locate(
        net, np.repeat(shape, m), np.tile(x, n), np.tile(y, n), lo.ravel(), hi.ravel(), np.tile(acc, n)
    )
    along = np.maximum.accumulate(got.reshape(n, m), axis=1)
    off = off.reshape(n, m)
    return along[:, -1] - along[:, 0], off.mean(axis=1), along[:, -1], off[:, -1]


def infer(
    net: Network,
    active: ActiveByShape,
    times: Ints,
    x: Floats,
    y: Floats,
    acc: Floats,
    policy: ProgressPolicy,
) -> Guess | None:
    """The best trip instance for a bus's recent fixes (time order), or None when nothing fits."""
    reach = policy.near_m + float(acc[-1])
    runs = near_runs(net, float(x[0]), float(y[0]), policy.near_m + float(acc[0]))
    tries = [(s, a) for s, alongs in runs.items() if s in active for a in alongs]
    if not tries:
        return None
    shape = np.array([s for s, _ in tries], dtype=np.int64)
    moved, mean_off, along, off = _follow(
        net, shape, np.array([a for _, a in tries]), times, x, y, acc, policy
    )
    straight = float(np.hypot(x[-1] - x[0], y[-1] - y[0]))
    span_s = max(int(times[-1] - times[0]), 1) / 1000.0
    scored: list[Guess] = []
    for k, s in enumerate(shape.tolist()):
        if moved[k] < max(0.7 * straight, 0.5 * policy.min_move_m) or max(mean_off[k], off[k]) > reach:
            continue
        geometry = 1.0 - float(mean_off[k]) / reach
        options = [(p, i) for p, i in active[s] if along[k] < i.plan.stop_dist_m[-1] - policy.stop_radius_m]
        if not options:
            continue
        late, agreement = _schedule_scores(net, options, float(along[k]), int(times[-1]), policy)
        for (plan, instance), lateness, fit in zip(options, late.tolist(), agreement.tolist(), strict=True):
            if fit > 0:
                scored.append(
                    Guess(
                        plan,
                        instance,
                        float(along[k]),
                        float(off[k]),
                        lateness,
                        geometry * fit,
                        geometry,
                        float(moved[k]) / span_s,
                    )
                )
    if not scored:
        return None
    scored.sort(key=lambda g: -g.score)
    best = scored[0]
    rival = next((g.score for g in scored[1:] if g.instance is not best.instance), 0.0)
    return dataclasses.replace(best, confidence=best.confidence * (best.score - rival) / best.score)


def place(
    net: Network,
    options: list[tuple[int, TripInstance]],
    time_ms: int,
    x: float,
    y: float,
    policy: ProgressPolicy,
) -> Guess:
    """Where a bus whose frame names its trip is on it: the stretch and instance the schedule agrees with."""
    shape = int(net.plan_shape[options[0][0]])
    whole = np.array([net.shapes[shape].length_m])
    along, off = locate(net, np.array([shape]), np.array([x]), np.array([y]), np.zeros(1), whole)
    runs = near_runs(net, x, y, float(off[0]) + policy.near_m).get(shape) or [float(along[0])]
    # Where a line comes back to its start, a bus there is leaving (placed at the end, it would be done).
    end = float(options[0][1].plan.stop_dist_m[-1]) - policy.stop_radius_m
    before_end = [at for at in runs if at < end]
    best: Guess | None = None
    for at in before_end or runs:
        late, fit = _schedule_scores(net, options, at, time_ms, policy)
        k = int(np.argmin(np.abs(late)))
        if best is None or abs(late[k]) < abs(best.delay_s):
            best = Guess(
                options[k][0], options[k][1], at, float(off[0]), float(late[k]), float(fit[k]), 1.0, 0.0
            )
    assert best is not None  # runs is never empty
    return best
