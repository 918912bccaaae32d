"""OPOS, the OONI Probe Orchestration System.

The package is layered by job, each layer importing only from those below it (checked by
import-linter, see pyproject.toml):

    cli           the `opos` command: argument parsing and output only; nothing imports it
    probe         the probe: the trusted state, verification of what mirrors send, planning, claims
    audit         an auditor's core: re-render, compare, cosign, and its append-only log
    publish       render a verified commit, publish the static site, gather auditors' cosignatures
    eventlog      the public event log and impact previews
    trust         the signed history and the one decision that a commit may be followed
    signing       signature formats: SSHSIG, DSSE, keys, key documents, cosignatures, typed documents
    instructions  YAML, schemas, rules, targeting: bytes of staff files in, Instructions or problems out
    transport     the bounded HTTP exchange (one deadline, size caps) that probes and publishers use
    model, errors, atomic, lru, text   values, the error tree, atomic writes, a bounded cache, text

The probe and the publishing side (publish, audit, webhook/) never import each other. The pure
core (model, yamlfile, rules, targeting, sshsig, dsse, keydoc, cosignature, history, revisions,
render, plan, events, impact, probe.verify) takes bytes and plain values and returns verified
values with no I/O. The adapters touch the world: gitrepo (git), keys (key files), site and atomic
(the disk), transport (the network), and the CLI and the services (webhook/) around them.
"""

__version__ = "0.1.0"
