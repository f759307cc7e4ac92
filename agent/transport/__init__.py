"""Durable delivery of the agent's records: an on-disk spool and the MQTT link that drains it."""
