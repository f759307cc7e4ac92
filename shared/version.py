"""Schema version of the wire contract; it appears in every topic (`v1`) and every message (`v`)."""

SCHEMA_VERSION = 1
TOPIC_ROOT = "ctxscope"
