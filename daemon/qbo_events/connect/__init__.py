"""Connecting companies: connect links, the OAuth redirect, disconnects and connection events."""
