"""Configuration from environment variables.

With nothing set, ContentOps runs on the embedded default: SQLite files and a
local blob folder under ``CONTENTOPS_DATA_DIR`` and tasks run in-process. Setting
``DATABASE_URL``, ``REDIS_URL`` and ``MINIO_ENDPOINT`` moves it to PostgreSQL,
Celery on Redis and MinIO, with the same code. The README's configuration
table is generated from ``SETTINGS`` below (see ``tests/test_readme.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .errors import ServiceError


class ConfigError(ServiceError):
    """A setting has a value the process cannot start with."""


@dataclass(frozen=True)
class Setting:
    env: str
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("CONTENTOPS_DATA_DIR", "./var", "Folder for the embedded default: SQLite file, local blobs, secret key."),
    Setting("DATABASE_URL", "", "SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db. Empty: SQLite in the data dir."),
    Setting("DATABASE_REPLICA_URL", "", "A read replica of DATABASE_URL for the sales reads (contact profiles, leads, "
            "contacts, post analytics), which tolerate its lag. Empty: they read the primary."),
    Setting("DATABASE_AUTO_MIGRATE", "", "Run Alembic migrations at start-up: 1/0. Empty: only on SQLite."),
    Setting("REDIS_URL", "", "Redis for Celery (broker and results). Empty: tasks run in-process."),
    Setting("MINIO_ENDPOINT", "", "host:port of MinIO/S3. Empty: blobs in the data dir."),
    Setting("MINIO_ACCESS_KEY", "", "MinIO access key."),
    Setting("MINIO_SECRET_KEY", "", "MinIO secret key."),
    Setting("MINIO_BUCKET", "contentops", "Bucket for originals and variants; created if missing."),
    Setting("MINIO_SECURE", "0", "1 to use TLS to MinIO."),
    Setting("MINIO_REGION", "us-east-1", "Region; set so presigning needs no network call."),
    Setting("MINIO_PUBLIC_ENDPOINT", "", "Endpoint browsers reach, for presigned URLs. Empty: MINIO_ENDPOINT."),
    Setting("CONTENTOPS_SECRET_KEY", "", "Signs page tokens. Empty: generated once into the data dir."),
    Setting("SHARE_TOKEN_KEYS", "", "Share-link signing keys 'id:secret,...', newest first; older ones still verify "
            "(rotation). Empty: one key derived from CONTENTOPS_SECRET_KEY."),
    Setting("CONTENT_GRPC_ADDR", "127.0.0.1:50051", "Where the content service listens."),
    Setting("DISTRIBUTION_GRPC_ADDR", "127.0.0.1:50052", "Where the distribution service listens."),
    Setting("TRACKING_GRPC_ADDR", "127.0.0.1:50053", "Where the tracking service listens."),
    Setting("WEB_ADDR", "127.0.0.1:8000", "Where the web edge (pages and beacons) listens."),
    Setting("WEB_SERVICE_TOKEN", "", "The web edge's bearer token (a ROLE_SERVICE user) for calls to the services."),
    Setting("WEB_WORKERS", "1", "uvicorn worker processes of the web edge (2 on this 2-core machine: README figures)."),
    Setting("WEB_KEEPALIVE_SECONDS", "75", "How long the web edge keeps an idle HTTP connection open: longer than a load "
            "balancer's idle timeout (often 60 s), so the balancer never reuses a connection the edge is closing."),
    Setting("WEB_COOKIE_SECURE", "0", "1 to mark the edge's cookies Secure (behind HTTPS)."),
    Setting("TRACKING_STREAM_PARTITIONS", "1", "Redis streams the tracking events are spread over, by viewer."),
    Setting("TRACKING_RETENTION_DAYS", "90", "Raw heartbeat events older than this are purged; aggregates stay."),
    Setting("TRACKING_HALF_LIFE_DAYS", "14", "Interest decays by half over this many days."),
    Setting("TRACKING_TIMEZONE", "Asia/Shanghai", "Time zone of leads' days and of 'yesterday 21:14'."),
    Setting("TRACKING_IP_SALT", "", "Salt for hashing client IPs (truncated first); the tracking service and the web edge (which "
            "starts page views itself) must share it. Empty: derived from the secret key."),
    Setting("TRACKING_TOKEN_MAX_AGE_DAYS", "365", "Share links older than this are refused as expired."),
    Setting("TRACKING_CONSUMER_LINGER_SECONDS", "0.25", "A tracking consumer that has caught up reads again at most "
            "this often, so what arrives meanwhile is applied in one transaction (each costs about 9 ms of CPU however "
            "small it is). Adds up to this much to an event's way to its tag. 0: apply whatever arrives at once."),
    Setting("CAMPAIGN_CHUNK_SIZE", "25", "Reps per Celery render task when a publish fans out."),
    Setting("CAMPAIGN_RESWEEP_SECONDS", "300", "Copies no worker has taken this long after publishing are queued "
            "again (then at most once per this long)."),
    Setting("CAMPAIGN_LEASE_SECONDS", "60", "A worker holds its chunk's copies this long, renewed after a copy once a "
            "quarter of it has passed; copies a dead worker held are queued again by the next sweep (every 30 s) after "
            "it runs out. Longer than one copy's render."),
    Setting("GRPC_MAX_WORKERS", "16", "Threads serving RPCs per process."),
    Setting("SHUTDOWN_GRACE_SECONDS", "15", "On SIGTERM, how long in-flight RPCs get to finish."),
    Setting("GRPC_MAX_CONNECTION_AGE_SECONDS", "300", "Servers close a client connection this old (calls in flight get "
            "SHUTDOWN_GRACE_SECONDS), so round-robin clients re-resolve and spread over new replicas. 0: never."),
    Setting("MAX_ASSET_BYTES", "20971520", "Largest accepted upload (20 MiB)."),
    Setting("MAX_IMAGE_PIXELS", "40000000", "Largest accepted width x height: refuses decompression bombs."),
    Setting("SCHEDULER_INTERVAL_SECONDS", "15", "How often scheduled posts and the event outbox are checked."),
    Setting("AUTH_CACHE_SECONDS", "2", "How long a verified token is cached; a revocation takes effect within it."),
    Setting("AUTH_STALE_SECONDS", "600", "While the database is unavailable, a token verified this recently is still "
            "accepted (no revocation can be written then either), so ingest keeps recording into Redis. 0: never."),
    Setting("POST_STALE_SECONDS", "600", "While the database is unavailable, the distribution service still serves ready "
            "copies of a post whose state it read this recently (no archive can be written then either), so shared links "
            "keep opening. 0: never."),
    Setting("READY_COPIES", "20000", "Ready copies of live campaigns each distribution process holds in memory (about "
            "8 KiB each with 9 images), so a page's first open needs no query and opens while the database is down; "
            "the campaigns loaded longest ago go first."),
    Setting("LOG_LEVEL", "INFO", "Python logging level."),
    Setting("LOG_FORMAT", "json", "json: one JSON object per line with the request id; text: plain lines."),
    Setting("METRICS_ADDR", "", "host:port for this process's Prometheus /metrics (empty: not served; the web edge "
                                "always serves /metrics on WEB_ADDR)."),
)


def _choice(env: dict[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = env[name].strip().lower()
    if value not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {env[name]!r}")
    return value


def _flag(value: str, default: bool) -> bool:
    if value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"expected 1/0, got {value!r}")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    database_replica_url: str
    auto_migrate: bool
    redis_url: str
    minio_endpoint: str
    minio_access_key: str
    minio_secret_key: str
    minio_bucket: str
    minio_secure: bool
    minio_region: str
    minio_public_endpoint: str
    secret_key: bytes
    share_token_keys: tuple[tuple[str, bytes], ...]
    content_addr: str
    distribution_addr: str
    tracking_addr: str
    web_addr: str
    web_service_token: str
    web_cookie_secure: bool
    web_workers: int
    web_keepalive_seconds: int
    tracking_stream_partitions: int
    tracking_retention_days: float
    tracking_half_life_days: float
    tracking_timezone: str
    tracking_ip_salt: bytes
    tracking_token_max_age_days: float
    tracking_consumer_linger_seconds: float
    campaign_chunk_size: int
    campaign_resweep_seconds: float
    campaign_lease_seconds: float
    grpc_max_workers: int
    shutdown_grace_seconds: float
    grpc_max_connection_age_seconds: float
    max_asset_bytes: int
    max_image_pixels: int
    scheduler_interval_seconds: float
    auth_cache_seconds: float
    auth_stale_seconds: float
    post_stale_seconds: float
    ready_copies: int
    log_level: str
    log_format: str
    metrics_addr: str

    @property
    def tracking_token_max_age_seconds(self) -> float:
        return self.tracking_token_max_age_days * 86_400

    @property
    def embedded_tasks(self) -> bool:
        return not self.redis_url

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def replace(self, **changes: object) -> "Settings":
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _int(env: dict[str, str], name: str) -> int:
    raw = env[name]
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name}: must be positive, got {value}")
    return value


def _float(env: dict[str, str], name: str) -> float:
    raw = env[name]
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name}: must not be negative, got {value}")
    return value


def _positive_float(env: dict[str, str], name: str) -> float:
    value = _float(env, name)
    if value == 0:
        raise ConfigError(f"{name}: must be positive, got 0")
    return value


def _timezone(name: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"TRACKING_TIMEZONE: unknown time zone {name!r}") from None
    return name


def _secret_key(raw: str, data_dir: Path) -> bytes:
    if raw:
        return raw.encode()
    path = data_dir / "secret.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_urlsafe(32))
        tmp.chmod(0o600)
        os.replace(tmp, path)
    return path.read_text().strip().encode()


def _share_keys(spec: str, secret_key: bytes) -> tuple[tuple[str, bytes], ...]:
    from .sharetoken import parse_keys

    if not spec:
        derived = hashlib.sha256(b"share-token:" + secret_key).hexdigest()
        return (("k0", derived.encode()),)
    try:
        return tuple(parse_keys(spec))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    source = os.environ if environ is None else environ
    env = {s.env: source.get(s.env, s.default) for s in SETTINGS}
    data_dir = Path(env["CONTENTOPS_DATA_DIR"]).resolve()
    database_url = env["DATABASE_URL"] or f"sqlite:///{data_dir / 'contentops.db'}"
    try:
        auto_migrate = _flag(env["DATABASE_AUTO_MIGRATE"], database_url.startswith("sqlite"))
        minio_secure = _flag(env["MINIO_SECURE"], False)
        web_cookie_secure = _flag(env["WEB_COOKIE_SECURE"], False)
    except ConfigError as exc:
        raise ConfigError(f"DATABASE_AUTO_MIGRATE/MINIO_SECURE/WEB_COOKIE_SECURE: {exc}") from None
    secret_key = _secret_key(env["CONTENTOPS_SECRET_KEY"], data_dir)
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        database_replica_url=env["DATABASE_REPLICA_URL"],
        auto_migrate=auto_migrate,
        redis_url=env["REDIS_URL"],
        minio_endpoint=env["MINIO_ENDPOINT"],
        minio_access_key=env["MINIO_ACCESS_KEY"],
        minio_secret_key=env["MINIO_SECRET_KEY"],
        minio_bucket=env["MINIO_BUCKET"],
        minio_secure=minio_secure,
        minio_region=env["MINIO_REGION"],
        minio_public_endpoint=env["MINIO_PUBLIC_ENDPOINT"] or env["MINIO_ENDPOINT"],
        secret_key=secret_key,
        share_token_keys=_share_keys(env["SHARE_TOKEN_KEYS"], secret_key),
        content_addr=env["CONTENT_GRPC_ADDR"],
        distribution_addr=env["DISTRIBUTION_GRPC_ADDR"],
        tracking_addr=env["TRACKING_GRPC_ADDR"],
        web_addr=env["WEB_ADDR"],
        web_service_token=env["WEB_SERVICE_TOKEN"],
        web_cookie_secure=web_cookie_secure,
        web_workers=_int(env, "WEB_WORKERS"),
        web_keepalive_seconds=_int(env, "WEB_KEEPALIVE_SECONDS"),
        tracking_stream_partitions=_int(env, "TRACKING_STREAM_PARTITIONS"),
        tracking_retention_days=_float(env, "TRACKING_RETENTION_DAYS"),
        tracking_half_life_days=_positive_float(env, "TRACKING_HALF_LIFE_DAYS"),
        tracking_timezone=_timezone(env["TRACKING_TIMEZONE"]),
        tracking_ip_salt=(env["TRACKING_IP_SALT"].encode() or hashlib.sha256(b"ip-salt:" + secret_key).digest()),
        tracking_token_max_age_days=_positive_float(env, "TRACKING_TOKEN_MAX_AGE_DAYS"),
        tracking_consumer_linger_seconds=_float(env, "TRACKING_CONSUMER_LINGER_SECONDS"),
        campaign_chunk_size=_int(env, "CAMPAIGN_CHUNK_SIZE"),
        campaign_resweep_seconds=_float(env, "CAMPAIGN_RESWEEP_SECONDS"),
        campaign_lease_seconds=_positive_float(env, "CAMPAIGN_LEASE_SECONDS"),
        grpc_max_workers=_int(env, "GRPC_MAX_WORKERS"),
        shutdown_grace_seconds=_float(env, "SHUTDOWN_GRACE_SECONDS"),
        grpc_max_connection_age_seconds=_float(env, "GRPC_MAX_CONNECTION_AGE_SECONDS"),
        max_asset_bytes=_int(env, "MAX_ASSET_BYTES"),
        max_image_pixels=_int(env, "MAX_IMAGE_PIXELS"),
        scheduler_interval_seconds=_float(env, "SCHEDULER_INTERVAL_SECONDS"),
        auth_cache_seconds=_float(env, "AUTH_CACHE_SECONDS"),
        auth_stale_seconds=_float(env, "AUTH_STALE_SECONDS"),
        post_stale_seconds=_float(env, "POST_STALE_SECONDS"),
        ready_copies=_int(env, "READY_COPIES"),
        log_level=env["LOG_LEVEL"].upper(),
        log_format=_choice(env, "LOG_FORMAT", ("json", "text")),
        metrics_addr=env["METRICS_ADDR"],
    )
