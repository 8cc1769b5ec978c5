"""Where changes come from: the webhook listener and the per-resource pollers."""
