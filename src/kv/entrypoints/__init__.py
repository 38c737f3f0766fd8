"""Entrypoints: the HTTP application and the command line."""
