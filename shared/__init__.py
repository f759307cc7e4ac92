"""The wire contract between agent and collector: message schemas, codec, topics and identifiers."""

from ctxscope.shared.version import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION"]
