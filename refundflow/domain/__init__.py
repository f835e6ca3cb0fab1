"""Pure refund rules: money, orders, policy, the quote, review and calendars.

Nothing in this package does IO, reads the clock or draws random numbers, so every function
here is safe to call from inside a Temporal workflow and gives the same answer on replay.
"""
