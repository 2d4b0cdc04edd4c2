"""Governance: the data catalog, the quality history and the audit log's queries."""
