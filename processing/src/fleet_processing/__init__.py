"""fleet pure geo logic: GTFS model, trip progress, ETA, deviation and geofences.

Pure functions only: no network, no database, no clock reads that are not
passed in as arguments.
"""
