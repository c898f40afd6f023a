"""Configuration from environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.shared.settings import SETTINGS, ConfigError, load_settings


def test_embedded_default_needs_nothing(tmp_path: Path) -> None:
    s = load_settings({"CONTENTOPS_DATA_DIR": str(tmp_path)})
    assert s.database_url == f"sqlite:///{tmp_path / 'contentops.db'}"
    assert s.is_sqlite and s.auto_migrate and s.embedded_tasks and not s.minio_endpoint
    assert s.max_asset_bytes == 20 * 1024 * 1024


def test_generated_secret_key_is_stable_and_private(tmp_path: Path) -> None:
    a = load_settings({"CONTENTOPS_DATA_DIR": str(tmp_path)}).secret_key
    b = load_settings({"CONTENTOPS_DATA_DIR": str(tmp_path)}).secret_key
    assert a == b and len(a) >= 32
    assert (tmp_path / "secret.key").stat().st_mode & 0o077 == 0


def test_production_settings(tmp_path: Path) -> None:
    s = load_settings({
        "CONTENTOPS_DATA_DIR": str(tmp_path),
        "DATABASE_URL": "postgresql+psycopg://u@db/contentops",
        "REDIS_URL": "redis://redis:6379/0",
        "MINIO_ENDPOINT": "minio:9000",
        "MINIO_PUBLIC_ENDPOINT": "cdn.example.com",
        "CONTENTOPS_SECRET_KEY": "k",
    })
    assert not s.is_sqlite and not s.auto_migrate and not s.embedded_tasks
    assert s.minio_public_endpoint == "cdn.example.com" and s.secret_key == b"k"


@pytest.mark.parametrize(("name", "value"), [("MAX_ASSET_BYTES", "lots"), ("MAX_ASSET_BYTES", "0"),
                                             ("SHUTDOWN_GRACE_SECONDS", "-1"), ("MINIO_SECURE", "maybe"), ("READY_COPIES", "0"),
                                             ("TRACKING_TIMEZONE", "Mars/Olympus"), ("TRACKING_HALF_LIFE_DAYS", "0"),
                                             ("CAMPAIGN_LEASE_SECONDS", "0")])
def test_bad_values_are_refused_with_the_variable_named(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({"CONTENTOPS_DATA_DIR": str(tmp_path), name: value})


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    missing = [s.env for s in SETTINGS if f"`{s.env}`" not in readme]
    assert missing == [], f"README configuration table lacks {missing}"
