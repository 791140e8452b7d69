"""Commenda's sales-tax API: its typed models, an async client, and the provider built on them."""
