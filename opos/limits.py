"""The ledger's size limits, in one place: every reader of a ledger (the working tree, git, the rules, the key
documents) bounds what it reads by these, so a hostile file costs bounded time and memory wherever it is read.

The probe's limits on what mirrors send are `transport.Limits`; the web services' are `webhook.limits`.
"""

MAX_LEDGER_FILE_BYTES = 1024 * 1024  # any file of the ledger, refused from its git object header past this
MAX_INSTRUCTION_BYTES = 64 * 1024  # one instruction file
MAX_POLICY_BYTES = 16 * 1024  # policy.yaml
MAX_KEY_FILE_BYTES = 64 * 1024  # one key document (keys/<N>.json)
MAX_KEY_FILES = 1000  # key documents read at one commit: a version a week for twenty years
CHECK_MEMO_SIZE = 20_000  # instruction files whose verdict a process remembers
