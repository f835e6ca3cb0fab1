"""Run a refundflow worker: ``python worker.py``.

The same worker as ``refundflow worker``, configured by ``REFUNDFLOW_*`` (and Temporal's own
``TEMPORAL_*``) environment variables; see the README's "Running in production".
"""

from refundflow.worker import main

if __name__ == "__main__":
    main()
