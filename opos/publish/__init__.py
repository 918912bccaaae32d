"""Publishing: a verified commit into a static mirror tree (render: canonical payloads; site: the atomic
tree, the log export; keychain: the key documents on a site) and the cosignatures gathered from auditors
before a head names a commit (cosigning). The service (webhook/) and `opos render` publish through here."""
