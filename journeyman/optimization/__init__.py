"""Optimization: sending at each customer's best hour, splits that learn, and the global
control group.

`optimize` holds the pure functions (best hour, Thompson draws, intervals), `splits` the
counts they read from the database, `holdout` the global holdout.
"""
