"""alertdist: ZTF-style alert distribution through Apache Kafka, orchestrated by Prefect."""

__version__ = "0.1.0"
