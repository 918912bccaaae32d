"""OPOS, the OONI Probe Orchestration System.

The core modules (model, yamlfile, rules, sshsig, history, dsse, keys, render) take bytes and plain
values and return verified values; only gitrepo (dulwich), the CLI and the service touch the world.
"""

__version__ = "0.1.0"
