"""The demo (``invoice-sync demo``) and the fake WHMCS it serves.

Not used by the running product: ``run.py`` starts a coordinator, fake WHMCS installations and
agents on loopback; ``fake_whmcs.py`` answers the WHMCS API the way the real one does
(see docs/WHMCS.md) and is what the tests, the benchmarks and the demo talk to.
"""

DEMO_DURATION = "about ten seconds"
"""How long ``invoice-sync demo`` takes, as ``--help`` and the README state it (a test keeps them
equal). Measured 7.2-9.5 s wall time on a shared 2-core machine (``time invoice-sync demo``)."""
