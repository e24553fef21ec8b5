"""The source contract suite: every source type against its real (local) server.

`kits.py` holds one kit per source type (`KITS`); `test_source_contract.py` runs every
contract test over every kit. A new source gets the whole suite by adding one kit.
"""
