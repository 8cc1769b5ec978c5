"""The admin HTTP API under /api/v1/ on the private health listener, and its OpenAPI document."""
