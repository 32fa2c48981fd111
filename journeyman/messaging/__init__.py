"""Sending, below the activities: the provider interface and its outbox, the channel-choice
rules (reachable, consenting, not suppressed), frequency caps, provider rate limits and
the in-app inbox. `activities/` calls these; audience previews (`reach`) and the
simulator use them without going through an activity."""
