"""Kafka plumbing shared by every service: clients built one way, one error base with one transient rule and
one retry helper, the counting producer, keyed state topics, and stopping on signals.

- `clients`: producer, consumer and admin client with the project's defaults.
- `errors`: `KafkaOperationError`, `is_transient`, `retry_call`.
- `signals`: `stop_on_signals`.
"""
