"""The feed service: follows the ledger (opos.publish.follow), serves the signed feed and the public log, grants
claims. `app` builds the Flask application; the other modules are its routes, request parsing, answers,
configuration and stores. Kept light on import: gunicorn's master imports the hooks (gunicorn_hooks) before
anything of the application."""
