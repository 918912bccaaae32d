"""An auditor's core: cosign a feed only when the public, signed history renders it byte for byte and it
extends everything cosigned before (`auditing`), with the fsynced append-only log of what was cosigned.
The HTTP service around it is webhook/auditor; the one-shot command is `opos auditor cosign`."""
