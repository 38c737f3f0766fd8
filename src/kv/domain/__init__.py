"""The domain: key and value rules, records, transactions, errors, the repository port and the
service.

Imports only the standard library (enforced by import-linter).
"""
