"""The demo (``invoice-sync demo``) and the fake WHMCS it serves.

Not used by the running product: ``run.py`` starts a coordinator, fake WHMCS installations and
agents on loopback; ``fake_whmcs.py`` answers the WHMCS API the way the real one does
(see docs/WHMCS.md) and is what the tests, the benchmarks and the demo talk to.
"""
