"""Hostile input and security evidence: fuzzing, scope, secrecy, SSRF, limits."""
