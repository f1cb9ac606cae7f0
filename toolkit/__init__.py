"""The toolkit's machinery, one module per concern; docs/architecture.md maps them.

The scripts at the root, criterion.py and get_model.py import from here; nothing here imports a
numbered script.
"""
