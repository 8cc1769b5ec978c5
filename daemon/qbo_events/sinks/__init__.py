"""Where events go: signing, the retry schedule and the bounded pool of senders."""
