"""The instruction files: bytes of staff YAML in, valid Instructions or located problems out.

yamlfile (safe YAML with line marks), rules (schema, meaning, policy), resources (the shipped
schemas, nettests and countries), worktree (a working tree's ledger directory, read from disk).
"""
