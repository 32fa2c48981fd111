"""Customers: what the service knows of one person.

`profiles` builds the names expressions and templates read (profile and history),
`traits` turns trait changes into `trait_changed` events, `phones` writes numbers in
E.164, `clock` does local-time arithmetic in a customer's time zone.
"""
