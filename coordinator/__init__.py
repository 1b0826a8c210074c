"""invoice-sync coordinator: numbering, systems registry, forecaster, ops."""
