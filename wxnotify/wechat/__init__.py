"""WeChat Official Account API core: HTTP client, access_token manager, callback crypto, error taxonomy.

Nothing in this package may import Django models; callers pass in what it needs.
"""
