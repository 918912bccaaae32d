"""The conformance kit for probe clients (docs/conformance.md): scripted mirrors, signed worlds, scenarios."""
