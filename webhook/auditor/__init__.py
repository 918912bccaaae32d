"""An auditor's web service: POST /v1/cosign and the public log of what it cosigned, around opos.audit.

    gunicorn -c webhook/auditor.conf.py 'webhook.auditor:create_app()'

`app` holds the application; this module resolves `create_app` lazily, so that importing the gunicorn
hooks (gunicorn_hooks) does not import the application in gunicorn's master.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("create_app", "Auditor", "AuditorConfig"):
        from webhook.auditor import app

        return getattr(app, name)
    raise AttributeError(f"module 'webhook.auditor' has no attribute {name!r}")
