"""Insight: statistics, diffs between versions, attribution, the simulator and the
backtest (which run the real workflows in a throwaway environment)."""
