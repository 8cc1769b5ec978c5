"""The QuickBooks Online side: the 22 resources, the API client and OAuth tokens."""
