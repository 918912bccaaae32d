"""The public log: /v1/log.json for programs, /log and /log/<id> for people, /log.atom for feed readers."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import time
from collections.abc import Callable
from typing import Any

# Atom is only written here, never parsed: no XML from outside reaches ElementTree
from xml.etree import ElementTree  # nosec B405

from flask import Blueprint, Response, abort, make_response, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, NotFound

from opos.eventlog.events import Event, join_and
from opos.eventlog.governance import field_changes
from opos.eventlog.logindex import LogQuery, Period, decode_cursor, log_document, select
from opos.instructions import resources
from opos.model import format_time, parse_network, parse_time, parse_timestamp
from opos.text import for_terminal, for_xml
from webhook.answers import json_error
from webhook.feed_service.service import current
from webhook.limits import LIMITS

blueprint = Blueprint("log", __name__)


def _query(cursor_allowed: bool = True) -> LogQuery:
    args = request.args
    moments = {}
    for name in ("since", "until"):
        text = args.get(name, "").strip()
        if text:
            try:
                moments[name] = parse_timestamp(text)
            except ValueError:
                abort(400, f"{name}: {text!r} is not a date (2026-11-01) or a time with a zone (2026-11-01T00:00:00Z)")
    country = _parsed("country", resources.parse_known_country)
    network = _parsed("network", parse_network)
    period: Period = "time" if args.get("period") == "time" else "window"
    if args.get("period", "window") not in ("window", "time"):
        abort(400, "period: window (the instruction's window overlaps the period) or time (the event's time)")
    try:
        limit = int(args.get("limit", "100"))
    except ValueError:
        abort(400, "limit: a whole number")
    if not 1 <= limit <= LIMITS.log_page:
        abort(400, f"limit: from 1 to {LIMITS.log_page}")
    cursor = args.get("cursor") or None
    if cursor:
        try:
            if len(cursor) > 400:
                raise ValueError("too long")
            decode_cursor(cursor)
        except ValueError:
            abort(400, "cursor: use the `next` value of the previous page")
    return LogQuery(
        country=country, network=network, test=args.get("test") or None, instruction=args.get("instruction") or None,
        since=moments.get("since"), until=moments.get("until"), period=period,
        cursor=cursor if cursor_allowed else None, limit=limit,
    )  # fmt: skip


def _parsed(name: str, parse: Callable[[str], str]) -> str | None:
    text = request.args.get(name, "").strip()
    if not text:
        return None
    try:
        return parse(text)
    except ValueError as err:
        abort(400, f"{name}: {err}")


def _select(query: LogQuery) -> tuple[list[Event], str | None]:
    index = current().log_index()
    if index is None:
        return [], None
    return select(index.events(), dt.datetime.now(dt.UTC), query)


LOG_CACHE = "public, max-age=60"


def conditional(view: Callable[..., ResponseReturnValue]) -> Callable[..., Response]:
    """ETag and Cache-Control for a log view; If-None-Match answered with 304 before any work.

    The ETag names the indexed commit, the whole query and the minute (expired events depend on
    the moment of asking), so repeated requests cost a lookup, not a query of the log.
    """

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        service = current()
        index = service.log_index()
        version = index.indexed() if index is not None else None
        minute = int(time.time() // 60)
        etag = hashlib.sha256(f"{version}|{minute}|{request.full_path}".encode()).hexdigest()[:32]
        if request.if_none_match.contains(etag):
            response = Response(status=304)
        else:
            with service.rendered_lock:
                cached = service.rendered.get(etag)
            if cached is not None:
                response = Response(cached.get_data(), status=cached.status_code, mimetype=cached.mimetype)
            else:
                response = make_response(view(*args, **kwargs))
                if response.status_code == 200:
                    with service.rendered_lock:
                        service.rendered.put(etag, response)
        response.set_etag(etag)
        response.headers["Cache-Control"] = LOG_CACHE
        return response

    return wrapper


@blueprint.get("/v1/log.json")
@conditional
def log_json() -> ResponseReturnValue:
    events, cursor = _select(_query())
    return log_document(events, cursor)


def absolute(path: str) -> str:
    """An absolute link: from OPOS_PUBLIC_URL, never from the request's Host header (which anyone can set)."""
    public = current().config.public_url
    if public:
        return public.rstrip("/") + path
    return request.host_url.rstrip("/") + path  # development only: the README asks for OPOS_PUBLIC_URL


def _link(commit: str) -> str | None:
    template = current().config.commit_url
    return template.replace("{commit}", commit) if template else None


@blueprint.app_template_filter("when")
def _when(text: str) -> str:
    """`2026-12-01T00:00:00Z` → `1 Dec 2026, 00:00 UTC`."""
    try:
        moment = parse_time(text)
    except ValueError:
        return text
    return f"{moment.day} {moment:%b %Y, %H:%M} UTC"


_UNITS_IN_WORDS = ((7 * 86400, "week"), (86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


@blueprint.app_template_filter("every")
def _every(seconds: int) -> str:
    """`1200` → `every 20 minutes`; `3600` → `every hour`."""
    for size, unit in _UNITS_IN_WORDS:
        if seconds % size == 0:
            count = seconds // size
            return f"every {unit}" if count == 1 else f"every {count} {unit}s"
    return f"every {seconds} seconds"


def _in_words(field: str, value: Any) -> Any:
    """Durations (intervals, policy limits) in words, times in words: never raw seconds on a page."""
    if field in ("every", "min_every", "max_window") and isinstance(value, int):
        return _every(value).removeprefix("every ") if field != "every" else _every(value)
    if field in ("window.start", "window.end", "valid_after", "valid_before") and isinstance(value, str):
        return _when(value)
    if field == "target.countries" and isinstance(value, list):
        return _countries(value)
    return value


def _countries(codes: list[str]) -> str:
    names = resources.country_names()
    return ", ".join("every country" if c == "*" else f"{names.get(c, c)} ({c})" for c in codes)


@blueprint.app_template_filter("show")
def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return "\n".join(str(item) for item in value) or "(none)"
    return str(value)


@blueprint.app_template_filter("visible")
def _visible(text: str) -> str:
    """Commit messages come from git: control and bidirectional characters are shown, not obeyed."""
    return for_terminal(text)


@blueprint.app_template_filter("short")
def _short(commit: str) -> str:
    return commit[:12]


blueprint.add_app_template_filter(join_and, "join_and")


def _view(event: Event) -> dict[str, Any]:
    subject = event.subject
    shows_changes = event.action in ("changed", "policy-changed", "signer-added", "signer-removed", "keys-rotated")
    changed = field_changes(event.before, event.after) if shows_changes else []
    target = subject["target"]
    return {
        "event": event,
        "subject": subject,
        "where": ", ".join(part for part in (_countries(target["countries"]), ", ".join(target["networks"])) if part),
        "link": _link(event.revision),
        "changes": [(name, _in_words(name, old), _in_words(name, new)) for name, old, new in changed],
    }


FILTERS = ("country", "network", "test", "instruction", "since", "until", "period", "limit")


def _filters() -> dict[str, Any]:
    """The query's filters, to carry into the next page's and the Atom links: only names we know.

    Anything else in the query string (`endpoint`, `_method`, `_external`…) would be taken by
    url_for as one of its own arguments.
    """
    return {name: value for name in FILTERS if (value := request.args.get(name, ""))}


def _page_error(error: HTTPException, form: Any = None) -> tuple[str, int]:
    """An error on a page for people is a page: the form again (`form`, else the query's), with what to change."""
    page = render_template(
        "log.html", views=[], form=request.args if form is None else form, next_url=None,
        atom_url=url_for("log.atom"), error=error.description,
    )  # fmt: skip
    return page, error.code or 400


def page_not_found(error: HTTPException) -> ResponseReturnValue:
    """A 404 for a person (any path outside the API): the log's page, saying so."""
    return _page_error(NotFound(f"There is no page at {request.path!r}: search the log of instructions with the "
                                "form above."), form={})  # fmt: skip


@blueprint.errorhandler(400)
def bad_request(error: HTTPException) -> ResponseReturnValue:
    """A 400 before the view ran (a request that is not UTF-8): a page for the pages, JSON for the rest."""
    if request.endpoint in ("log.log_page", "log.instruction_page"):
        return _page_error(error, form={})  # the query may be what could not be read
    return json_error(error)


@blueprint.get("/log")
@conditional
def log_page() -> ResponseReturnValue:
    try:
        query = _query()
    except HTTPException as error:
        return _page_error(error)
    events, cursor = _select(query)
    params = _filters()
    return render_template(
        "log.html",
        views=[_view(e) for e in events],
        form=request.args,
        next_url=url_for("log.log_page", **params, cursor=cursor) if cursor else None,
        atom_url=url_for("log.atom", **params),
        error=None,
    )


@blueprint.get("/log/<ident>")
@conditional
def instruction_page(ident: str) -> ResponseReturnValue:
    events: list[Event] = []
    if re.fullmatch(r"[a-z0-9-]{3,80}", ident):
        events, _ = _select(LogQuery(instruction=ident, limit=LIMITS.log_page))
    events = [e for e in events if e.about_instruction]
    if not events:
        return _page_error(NotFound(f"There is no instruction {ident!r} in the log: search the log with the form "
                                    "above."), form={})  # fmt: skip
    status = _status(events, dt.datetime.now(dt.UTC))
    return render_template("instruction.html", ident=ident, views=[_view(e) for e in events], status=status)


def _status(events: list[Event], now: dt.datetime) -> str:
    """Where an instruction stands now, in words, from its newest event (events come newest first)."""
    latest = events[0]
    if latest.action == "removed" and latest.before is not None:
        end = parse_time(latest.before["window"]["end"])
        removed = parse_time(latest.time)
        early = " early" if removed < end else ""
        return f"Removed{early} on {_when(latest.time)}"
    if latest.action == "invalid":
        return f"Not valid since {_when(latest.time)}"
    window = latest.subject["window"]
    start, end = parse_time(window["start"]), parse_time(window["end"])
    if now < start:
        return f"Upcoming: starts {_when(window['start'])}"
    if now < end:
        return f"Active until {_when(window['end'])}"
    return f"Ended on {_when(window['end'])}"


@blueprint.get("/log.atom")
@conditional
def atom() -> Response:
    events, _ = _select(_query(cursor_allowed=False))
    namespace = "http://www.w3.org/2005/Atom"
    ElementTree.register_namespace("", namespace)

    def element(
        parent: ElementTree.Element, tag: str, text: str | None = None, **attributes: str
    ) -> ElementTree.Element:
        child = ElementTree.SubElement(parent, f"{{{namespace}}}{tag}", {k: for_xml(v) for k, v in attributes.items()})
        child.text = for_xml(text) if text is not None else None
        return child

    root = ElementTree.Element(f"{{{namespace}}}feed")
    self_url = absolute(url_for("log.atom", **_filters()))
    element(root, "id", self_url)
    element(root, "title", "OPOS: instructions to OONI probes")
    head = current().site.head()
    quiet = format_time(head.issued) if head is not None else format_time(dt.datetime.now(dt.UTC))
    element(root, "updated", events[0].time if events else quiet)  # never 1970 for an empty feed
    element(root, "link", href=self_url, rel="self")
    element(root, "link", href=absolute(url_for("log.log_page")))
    for event in events:
        view = _view(event)
        entry = element(root, "entry")
        element(entry, "id", f"tag:opos,{event.commit}:{event.action}:{event.instruction}:{event.time}")
        if event.about_instruction:
            title = f"{event.action}: {event.instruction} ({view['subject']['test']} in {view['where']})"
        else:
            title = f"{event.action}: {event.summary}"
        element(entry, "title", title)
        element(entry, "updated", event.time)
        element(element(entry, "author"), "name", event.signer or "unsigned")
        for approver in event.approvers:  # Atom's word for those who helped: here, who approved it
            element(element(entry, "contributor"), "name", approver)
        page = absolute(url_for("log.instruction_page", ident=event.instruction) if event.about_instruction
                        else url_for("log.log_page"))  # fmt: skip
        element(entry, "link", href=page)
        summary = f"{view['subject']['title']}. {view['subject']['reason']}".strip()
        element(entry, "summary", f"{summary} (sequence {event.sequence}, commit {event.revision}: {event.message})")
    body = ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
    return Response(body, mimetype="application/atom+xml")
