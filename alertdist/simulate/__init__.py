"""Simulated nights of ZTF-like alert packets, so the system runs without real data.

The face is `night` (`simulate_night`, `night_window`, `write_drop_folder`, `SimulatedAlert`) and `samples` (a
sample packet per schema version). Behind it, one module per part of a night, in the order the night uses them:
`sky` (almanac, field grid, positions), `ids` (nid, pid, candid, objectId), `plan` (the exposures), `images`
(fields and quadrant images), `photometry` (measurements, history, forced photometry), `objects` (kinds,
brightness, counterparts), `cutouts` and `stamps` (the stamp pool and each alert's pick), `templates` (real packets
as models), `records` (the alert handed out, cut to a schema version) and `drop` (a night into a drop folder).
"""
