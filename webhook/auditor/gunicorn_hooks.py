"""gunicorn's hooks for an auditor (webhook/auditor.conf.py holds the settings and imports these)."""

# mypy: disable-error-code="no-untyped-def"


def on_starting(server):
    # A configuration that cannot work stops here, with its reason, before any worker starts.
    from opos.errors import OposError
    from webhook.auditor.app import Auditor, AuditorConfig

    try:
        Auditor(AuditorConfig.from_environment())
    except OposError as err:
        server.log.error("the auditor cannot start: %s", err.diagnostics())
        raise SystemExit(1) from err


def post_worker_init(worker):
    from webhook.gunicorn_log import share_gunicorn_log

    share_gunicorn_log()
