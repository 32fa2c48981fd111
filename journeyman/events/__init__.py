"""Events, stage by stage: intake (accept and store), dispatcher and claims (hand over
in order, once), routing (entries and delivery to runs), parked events, and provider
feedback turned into journey events."""
