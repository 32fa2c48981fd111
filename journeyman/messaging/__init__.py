"""Sending, below the activities: the send decision (`decision`: pause, channel choice,
caps, quiet hours, pace) with its typed reasons (`reasons`) and the delivery ledger
(`ledger`); the provider interface and its outbox, the channel-choice rules (reachable,
consenting, not suppressed), frequency caps, provider rate limits, rendering and the
in-app inbox. `activities/` calls these; audience previews (`reach`) and the simulator
use them without going through an activity."""
