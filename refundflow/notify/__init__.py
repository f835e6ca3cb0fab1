"""Delivery of the outbox (DESIGN 12): email over SMTP, SMS over Twilio's REST API and signed
webhooks to the merchant, driven by :class:`refundflow.notify.dispatcher.NotificationDispatcher`.
"""
