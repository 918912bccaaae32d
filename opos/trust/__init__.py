"""Who signed what, and is it allowed: the signed history of the ledger.

sshsig (OpenSSH signatures, allowed_signers), history (the signer rules over a commit graph,
no I/O), revisions (the commit that last changed each file), gitrepo (the only dulwich module),
statedir (the files OPOS keeps beside a repository), verification (all of it for a repository on disk).
"""
