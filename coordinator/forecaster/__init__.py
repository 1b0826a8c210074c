"""The forecaster: sync WHMCS invoices (numbers, dates, amounts, never client data) into Redis,
keep per-system aggregates exact and current, and report revenue, receivables, a forecast and
reconciliation against the numbering ledger.

    money.py       currency exponents; Decimal <-> integer minor units
    store.py       invoices and aggregates, one Lua upsert per batch (upsert.lua)
    lock.py        one sync per system at a time (lock_*.lua)
    records.py     sync job records (``sync:<id>``) and their progress
    sync.py        full and "missing" sync, paging WHMCS correctly
    jobs.py        RQ glue: enqueue a sync, run it on a worker
    scheduler.py   the daily automatic sync, exactly one enqueue per (system, day)
    reports.py     revenue, receivables, forecast — from aggregates only
    reconcile.py   numbers seen in WHMCS vs numbers the coordinator issued
    api.py         HTTP (admin): syncs and reports
"""
