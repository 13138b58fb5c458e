"""The sample workload agent: a tiny HTTP service standing in for a customer's container.

The ``local`` cloud runs it as each instance's default image (``python -m
agent``), so health checks, routing and failure handling have a real
process to talk to. Standard library only: it must run anywhere Python runs.
"""
