"""Live operations: Prometheus metrics of every process, consumer lag and latency, and the heartbeat.

`registry` holds the metric families (names in Prometheus's conventions, one place), `exposition` serves them
over HTTP per process and announces the address for Prometheus's file discovery, `lag` measures any consumer
group's lag through the AdminClient, `heartbeat` proves the path through the clusters alive between nights;
`usage` measures what a night's stage cost its process (CPU, peak memory) for the night's stage table.
"""
