"""Plain records every stage shares: requests, workloads, GPU windows, topologies and the typed results.

The bottom of the stage order (``tests/test_layers.py``): a record imports no stage, so that any stage may hold one.
"""
