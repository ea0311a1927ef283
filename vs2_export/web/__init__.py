"""The static browser page (static/) and the assembly of a self-contained site (site.py)."""
