"""Kafka plumbing shared by every service: clients built one way, one error base with one transient rule and
one retry loop, the counting producer, reading to the end, keyed state topics, and stopping on signals.

Modules, each depending only on those above it:

- `errors`: `KafkaOperationError`, `is_transient`, `retry_call`, `retry_until`, `retry_condition` (Prefect).
- `clients`: producer, consumer and admin client with the project's defaults.
- `producer`: `CountingProducer` (back-pressure, counted deliveries, a checked `finish`).
- `reading`: `watermarks`, `read_to_end`.
- `state_topic`: `KeyedStateTopic` (a compacted topic of keyed JSON records: nights, users).
- `signals`: `stop_on_signals`.
"""
