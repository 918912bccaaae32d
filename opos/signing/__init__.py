"""Signature formats, pure: SSH signatures of commits (SSHSIG, allowed_signers), DSSE envelopes, Ed25519 keys
and the key documents that chain them. No I/O beyond reading and writing a key file (`keys`)."""
