"""Target functions for the example specs in ``specs/``.

Each module goes with a few specs and is meant to be read next to them:

- ``pipeline``: producer -> N workers -> collector (``specs/pipeline.yaml``)
- ``channels``: queues and pipes (``queue_fan_in``, ``simple_queue``, ``joinable_queue``,
  ``pipe_duplex``, ``pipe_oneway``)
- ``shared``: shared memory and manager state (``shared_value``, ``shared_array``,
  ``manager_state``)
- ``sync``: locks and friends (``lock``, ``rlock``, ``condition``, ``semaphore``,
  ``bounded_semaphore``, ``event``, ``barrier``)
- ``pools``: objects served by a manager (``manager_object``, ``manager_queue_lock``)

topo calls a target with keyword arguments only: each ``args`` entry and each binding
of ``inputs``, ``outputs`` and ``uses`` under its parameter name, plus ``ctx`` (a
``topo.context.RunContext``) when the signature has a parameter of that name. Whatever the
target returns is that instance's result in the run record, so the examples return
small JSON-friendly values.
"""
