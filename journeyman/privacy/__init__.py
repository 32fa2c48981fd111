"""Privacy and consent: who may be sent what, and what is forgotten.

`consent` keeps subscriptions and suppressions (and their log), `contacts` the double
opt-in of contact points set by client keys, `tokens` the sealed unsubscribe tokens,
`links` the link domains a client may not choose, `pseudonyms` the keyed digests and
erasure tombstones, `erasure` erasure and export (GDPR articles 17 and 15).
"""
