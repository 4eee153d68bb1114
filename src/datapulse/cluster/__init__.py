"""Cluster mode: DataPulse instances sharing one Redis."""
