"""The refund run, one module per concern (docs/architecture.md has the map):

- :mod:`.workflow`: the run loop, continue-as-new, and the messages a run accepts (Updates);
- :mod:`.stages`: review, supplier, approval, return of goods, the customer's confirmation;
- :mod:`.payouts`: sending tranches, providers' answers, fallbacks, ops' settlements;
- :mod:`.money`: reserving, requoting, expected arrival, our record of each payout;
- :mod:`.follow_up`: after the money is sent, until the customer has it;
- :mod:`.attention`: waiting for ops and carrying out their repair;
- :mod:`.effects`: the state and every effect (records, status, notices, details).
"""

from refundflow.workflows.refund.workflow import MessageResult, RefundWorkflow

__all__ = ["MessageResult", "RefundWorkflow"]
