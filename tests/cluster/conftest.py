"""Cluster-mode tests use the `redis_server` fixture from tests/conftest.py (a real redis-server per test)."""
