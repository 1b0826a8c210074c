"""Fault-injection evidence: real servers, real kills, a history checker over the ledger."""
