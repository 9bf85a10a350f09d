"""Simulated nights of ZTF-like alert packets, so the system runs without real data (`night`, `cutouts`)."""
