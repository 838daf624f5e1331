"""Batch and local jobs through PSI/J, with live status, output tailing and durable records."""
