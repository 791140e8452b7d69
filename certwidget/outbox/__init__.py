"""The outbox: every acknowledged submission, stored durably, and its delivery to the provider."""
