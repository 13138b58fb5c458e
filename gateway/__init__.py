"""The routing gateway (docs/architecture.md §10): an ASGI reverse proxy in its own process.

``{workload-id}.workloads.<WORKLOAD_DOMAIN>`` (or ``/w/{workload-id}/...``) →
routing KV (database on a miss) → the instance. Served by uvicorn:
``uvicorn gateway.asgi:application`` (``make run`` starts it).
"""
