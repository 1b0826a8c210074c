"""The systems registry: WHMCS installations, their encrypted credentials and agent tokens."""
