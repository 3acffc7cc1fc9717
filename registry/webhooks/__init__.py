"""Outbound webhooks, shared by every app: the target guard, Standard Webhooks signing and one delivery attempt
(targets, signing, sending), the registry's endpoints and their deliveries (services), and the event types apps
above the registry add from their AppConfig.ready (events). Monitor alerts use the same guard, signing and sending."""
