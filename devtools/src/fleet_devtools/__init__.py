"""Development tools: the local stack, the simulator, the demo and the benchmarks.

Installed in the workspace, never on a production node; nothing imports it.
``fleet stack|simulate|demo|bench`` come from the ``fleet.commands`` entry point.
"""
