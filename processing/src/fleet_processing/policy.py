"""Thresholds of trip progress and assignment (the lead maps them to FLEET_INGEST_* settings)."""

from __future__ import annotations

import msgspec


class ProgressPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Distances in metres, times in seconds, speeds in m/s."""

    stop_radius_m: float = 60.0
    """a bus this near a stop, along and off the line, is at it"""
    near_m: float = 100.0
    """a fix this near a shape (plus its accuracy) may be driving it"""
    off_route_m: float = 150.0
    """a fix further than this (plus its accuracy) from its window of the line is lost, not progress"""
    assumed_accuracy_m: float = 25.0
    """the accuracy of a fix that reports none"""
    max_speed_mps: float = 55.0
    """how far ahead of the previous progress a fix may project: this speed times the time between"""
    relocate_fixes: int = 3
    """this many consecutive lost fixes that agree with each other move the progress there (a jump)"""
    release_lost_s: float = 600.0
    """a bus lost from its trip's line this long is released, unless its frames name that trip (a detour)"""
    release_after_s: float = 7_200.0
    """a trip is released this long after its last scheduled arrival, reached or not"""
    min_move_m: float = 150.0
    """a bus is not assigned until its recent fixes span this much: a parked bus stays unassigned"""
    recent_fixes: int = 30
    """fixes kept to infer the trip of a bus without one"""
    recent_s: float = 600.0
    """and no older than this"""
    confirm_fixes: int = 3
    """fixes forward along a candidate's line before it is assigned (or, if doubtful, judged again)"""
    min_confidence: float = 0.2
    """the confidence (lead over the runner-up) a candidate needs to be assigned"""
    recheck_fixes: int = 6
    """fixes a doubtful candidate (under ``min_confidence``) is followed along its line before it is judged
    again: rivals on a shared road stay doubtful until the lines part, so judging them on every fix
    would cost an inference per fix for nothing"""
    max_delay_s: float = 3_600.0
    """a trip whose schedule is further than this from the bus is not a candidate"""
    schedule_scale_s: float = 600.0
    """a candidate's schedule agreement is exp(-|delay| / this)"""
    speed_tau_s: float = 60.0
    """time constant of the smoothed speed along the line"""
    on_time_early_s: float = 60.0
    on_time_late_s: float = 300.0
    """the on-time band: at most this early or this late"""
    slack_s: int = 1_800
    """an instance is a candidate from this long before its first departure until this long after its end"""
