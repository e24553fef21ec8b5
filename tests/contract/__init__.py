"""The source contract suite: every source type against its real (local) server.

`kits/` holds one module per source type, each registering its kit(s) in `KITS` (found by
`kits/__init__.py`); `test_source_contract.py` runs every contract test over every kit. A
new source gets the whole suite by adding one kit file.
"""
