"""The public event log: the ledger's history as events, their SQLite index, and impact previews.

events (pure: history → added/changed/removed/expired), logindex (the index beside the
repository, and queries), impact (what a change does, for reviewers: `opos diff`).
"""
