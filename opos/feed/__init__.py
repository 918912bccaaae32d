"""The signed feed: documents, signatures, publication, and what a probe does with it.

dsse (envelopes), keys (the Ed25519 crypto adapter: feed keys on disk), documents (the typed
head and feed, verified from bytes), render (canonical payloads from a verified ledger),
targeting and plan (pure: does an instruction apply, what a probe runs), site (publish a
commit into a static mirror tree, atomically).
"""
