"""The REST API (``/api/v1/``): thin DRF views over the messaging services and the selectors of each app."""
