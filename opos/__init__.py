"""OPOS, the OONI Probe Orchestration System.

The package is layered, each layer importing only from those below it (checked by import-linter,
see pyproject.toml):

    cli           the `opos` command: parsing and output only
    client        the probe: fetch, verify, keep state, plan
    feed          signed documents, publication, targeting and plans
    eventlog      the public event log and impact previews
    trust         signatures, the signed history, git (the only dulwich module)
    instructions  YAML, schemas, rules: bytes of staff files in, Instructions or problems out
    model, errors, atomic, lru   values, the error tree, atomic writes, a bounded cache

The pure core (model, yamlfile, rules, sshsig, history, revisions, dsse, render, targeting, plan,
events, impact, client.verify) takes bytes and plain values and returns verified values with no
I/O. The adapters touch the world: gitrepo (git), keys (key files), site and atomic (the disk),
client.fetch (the network), and the CLI and the service (webhook/) around them.
"""

__version__ = "0.1.0"
