"""Many results and the papers' reported numbers → a static HTML leaderboard (see leaderboard/site.py)."""
