"""gunicorn's hooks for an auditor (webhook/auditor.conf.py holds the settings and imports these)."""

# mypy: disable-error-code="no-untyped-def"


def on_starting(server):
    # A configuration that cannot work stops here, with its reason, before any worker starts.
    from opos.errors import OposError
    from webhook.auditor.app import Auditor, AuditorConfig
    from webhook.gunicorn_log import own_control_socket

    try:
        config = AuditorConfig.from_environment()
        Auditor(config).check()
    except OposError as err:
        server.log.error("the auditor cannot start: %s", err.diagnostics())
        raise SystemExit(1) from err
    own_control_socket(server, config.state)


def post_worker_init(worker):
    from webhook.gunicorn_log import share_gunicorn_log

    share_gunicorn_log()
