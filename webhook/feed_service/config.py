"""The service's configuration: one optional file (YAML or TOML) and OPOS_* environment variables over it.

Every setting has the same name in both places: `remote:` in the file is `OPOS_REMOTE` in the
environment, which wins. The environment alone is a complete configuration.
"""

from __future__ import annotations

import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from opos.instructions.oonirun import DEFAULT_LINK_ID, DEFAULT_NAME, LinkSettings
from opos.publish.follow import FollowSettings
from webhook.feed_service.errors import ConfigError


@dataclass(frozen=True)
class Config:
    remote: str  # the ledger repository: a path, file://, git:// or https:// URL
    data_dir: Path  # the local clone, caches, the site directory, the SQLite files
    feed_key: Path  # the Ed25519 private key that signs the feed (opos keygen)
    branch: str = "main"
    ledger_dir: str = "ledger"
    trust_root: str | None = None  # default: the history's single root commit
    webhook_secret: str | None = None  # the GitHub webhook secret; webhooks are refused without one
    poll_seconds: float = 30.0  # sync on this timer too, so a lost webhook costs one interval
    min_sync_interval_seconds: float = 0.5  # the sustained floor between syncs, however many webhooks arrive
    head_ttl_seconds: int = 86_400  # how long a head is valid; it is re-issued at half its life
    feed_retention: int = 1000  # published feeds kept as v1/feed/<commit>.json (the current one always)
    claims_database: str | None = None  # postgresql://… to share caps between instances; default SQLite in data_dir
    max_body_bytes: int = 1024 * 1024  # larger request bodies get 413
    body_seconds: float = 10.0  # a request body must have arrived by then: 408, and the connection is closed
    connections_per_address: int = 100  # concurrent connections of one address block (not trusted proxies); 0: none
    public_url: str | None = None  # https://opos.example.org: every absolute link (Atom) is built from it
    commit_url: str | None = None  # the log links commits here, e.g. https://github.com/ooni/ledger/commit/{commit}
    metrics_token: str | None = None  # when set, /metrics asks for `Authorization: Bearer <token>`
    claims_per_address: int = 1  # slots of one instruction a source address may hold; 0: no such limit
    claims_rate: str = "30/minute"  # claim requests per source address (limits notation); "0": no limit
    trusted_proxies: str = ""  # CIDRs whose X-Forwarded-For is believed (comma-separated); none by default
    claims_ipv4_prefix: int = 32  # the block IPv4 addresses are counted in (claims, rates, connections)
    claims_ipv6_prefix: int = 48  # the block IPv6 addresses are counted in: a /48 is what anyone gets for free
    claims_timeout_seconds: float = 2.0  # the longest a claim waits for the claims database (then 503)
    asn_db: Path | None = None  # a MaxMind DB (GeoLite2-ASN, DB-IP ASN): a claim's network must be the source's
    country_db: Path | None = None  # a MaxMind country or city DB: a claim's country must be the source's
    follow: bool = True  # run the follower thread (off for tests that drive syncs themselves)
    auditors: str = ""  # auditors' base URLs, comma-separated: each new commit is sent to them to cosign
    auditors_required: int = 0  # a new head is published once this many cosigned; 0: auditors are not asked
    # the auditors' public keys (.pub files, comma-separated): cosignatures are counted by distinct key among
    # these; the newest key document in the ledger, when there is one, names the auditors and the count instead
    auditor_keys: str = ""
    # the OONI Run bridge (docs/oonirun.md): the one link it serves; empty turns it off
    oonirun_link_id: str | None = DEFAULT_LINK_ID
    oonirun_author: str | None = None  # the link's public e-mail address: required while the bridge is on
    oonirun_name: str = DEFAULT_NAME
    oonirun_color: str | None = None  # #rrggbb for the app's card

    @property
    def auditor_urls(self) -> list[str]:
        return [url.strip() for url in self.auditors.split(",") if url.strip()]

    @property
    def auditor_key_files(self) -> list[Path]:
        return [Path(path.strip()) for path in self.auditor_keys.split(",") if path.strip()]

    def oonirun(self) -> LinkSettings | None:
        """The OONI Run link the service serves; None when the bridge is off. Raises ConfigError."""
        try:
            return LinkSettings.configured(
                self.oonirun_link_id, self.oonirun_author, self.oonirun_name, self.public_url, self.oonirun_color
            )
        except ValueError as err:
            raise ConfigError(str(err)) from None

    @property
    def site_dir(self) -> Path:
        return self.data_dir / "site"

    def following(self) -> FollowSettings:
        """What following the ledger needs (opos.publish.follow)."""
        return FollowSettings(
            self.remote, self.branch, self.ledger_dir, self.trust_root, self.feed_key, self.data_dir, self.site_dir,
            self.head_ttl_seconds, self.feed_retention, tuple(self.auditor_urls), tuple(self.auditor_key_files),
            self.auditors_required, self.oonirun(),
        )  # fmt: skip

    @property
    def claims_database_url(self) -> str:
        return self.claims_database or f"sqlite:///{self.data_dir / 'claims.sqlite3'}"


_REQUIRED = ("remote", "data_dir", "feed_key")
_ZERO_TURNS_OFF = frozenset({"claims_per_address", "auditors_required", "connections_per_address"})
_NAMES = [f.name for f in fields(Config)]
_TYPES = typing.get_type_hints(Config)  # the declared types, resolved (not their spelling)
ENVIRONMENT = {f"OPOS_{name.upper()}": name for name in _NAMES}


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read the configuration file {path}: {err.strerror}") from None
    try:
        loaded = tomllib.loads(data.decode()) if path.suffix == ".toml" else yaml.safe_load(data)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {err}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of settings (remote: …, data_dir: …)")
    unknown = sorted(set(loaded) - set(_NAMES))
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r}; the settings are: {', '.join(_NAMES)}")
    return loaded


def _convert(name: str, value: Any, where: str) -> Any:
    """A setting's text (or a file's value) as the type Config declares for it."""
    kind = _TYPES[name]
    declared = typing.get_args(kind)
    optional = type(None) in declared
    base = next(t for t in declared if t is not type(None)) if optional else kind
    if value is None or value == "":
        if optional:
            return None
        raise ConfigError(f"{where}: is empty; give a value, or leave the setting out")
    if base is bool:
        return str(value).lower() in ("1", "true", "yes", "on")
    if base is Path:
        return Path(str(value)).expanduser()
    if base not in (int, float):
        return str(value) if base is str else value
    try:
        number = base(value)
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a number") from None
    if number < 0 or (number == 0 and name not in _ZERO_TURNS_OFF):
        raise ConfigError(f"{where}: must be more than 0")
    return number


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """The file (`path`, else $OPOS_CONFIG, else none), then the environment, then `overrides`."""
    environ = os.environ if environ is None else environ
    path = path or environ.get("OPOS_CONFIG")
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if path:
        for name, value in _read_file(Path(path)).items():
            values[name], origin[name] = value, f"{path}: {name}"
    for variable, name in ENVIRONMENT.items():
        if variable in environ:
            values[name], origin[name] = environ[variable], variable
    for name, value in (overrides or {}).items():
        if name not in _NAMES:
            raise ConfigError(f"unknown setting {name!r}")
        values[name], origin[name] = value, name
    missing = [name for name in _REQUIRED if values.get(name) in (None, "")]
    if missing:
        listed = ", ".join(f"OPOS_{name.upper()}" for name in missing)
        raise ConfigError(f"the service needs {listed} (in the environment, or in the file given by OPOS_CONFIG)")
    converted = {name: _convert(name, value, origin[name]) for name, value in values.items()}
    return replace(Config(remote="", data_dir=Path(), feed_key=Path()), **converted)
