"""The domain: typed models, the catalog of zones and reasons (data with sources), validation.

Nothing here knows HTTP, storage or a provider's API.
"""
