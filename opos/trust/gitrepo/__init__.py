"""The only package that imports dulwich: the git adapter. Everything else of OPOS reads a repository through
the names below.

    objects   commits parsed from their raw bytes (the payload handed to the signature check is byte for
              byte what git signed: git's `parse_buffer_signed_by_header` rules), trees, size-checked blobs
    ledger    a ledger repository as the rules see it (GitLedger: a `CommitSource`)
    write     a new repository, its config, a commit of edits
    fetch     one branch of a remote into the local mirror (C git where it is installed, else dulwich)
"""

from opos.trust.gitrepo.fetch import FetchLimits, fetch_branch, redact
from opos.trust.gitrepo.ledger import GitLedger
from opos.trust.gitrepo.objects import GitObjects, normalise_ledger_dir, parse_raw_commit
from opos.trust.gitrepo.write import check_out, init_repository, set_config, write_commit
from opos.trust.verdictfile import FileCache

__all__ = [
    "FetchLimits",
    "FileCache",
    "GitLedger",
    "GitObjects",
    "check_out",
    "fetch_branch",
    "init_repository",
    "normalise_ledger_dir",
    "parse_raw_commit",
    "redact",
    "set_config",
    "write_commit",
]
