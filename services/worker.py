"""Celery entry point: ``celery -A services.worker worker`` / ``celery -A services.worker beat``."""

from services.shared.celery_app import make_celery
from services.shared.logs import configure_logging
from services.shared.settings import load_settings

_settings = load_settings()
configure_logging(_settings.log_level, _settings.log_format)
app = make_celery(_settings)
