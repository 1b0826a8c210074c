"""Warnings an admin must see: failed syncs (with WHMCS's reason), mixed currencies,
reconciliation findings. Deduplicated by id (``sync_failed:blue``), counted, acknowledgeable.

    store.py     raise, list, ack (raise.lua)
    api.py       GET /v1/warnings, POST /v1/warnings/{id}/ack
    metrics.py   unacknowledged warnings by type, for /metrics
"""
