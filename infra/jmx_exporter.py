"""The Prometheus JMX exporter java agent on the brokers and MirrorMaker 2: their JMX metrics over HTTP.

The agent (``io.prometheus.jmx:jmx_prometheus_javaagent``) is fetched from Maven Central with the Kafka jars
(infra/pom.xml); its ``-javaagent`` option and `announce` (the address where the project's Prometheus looks,
``.alertdist/prometheus/jmx-targets``) live in `alertdist.jvm`, since production starts JVMs too, and are
re-exported here.
"""

from __future__ import annotations

from alertdist.jvm import JMX_RULES, AgentMissingError, agent_jar, agent_option, announce

__all__ = ["RULES", "AgentMissingError", "agent_jar", "agent_option", "announce"]

RULES = JMX_RULES  # kept under its old name: the agent itself is started from alertdist.jvm
