import pytest

from aisystant_server.settings import SettingsError, as_duration, load_settings

STRONG_SECRET = "k3Jx9-Qv7TzLw2Hn8RbYc4Ue6Pa1Sd5Fg0"


def test_environment_overrides_the_ini_with_types():
    settings = load_settings({"aisystant.port": "8000", "cors.origins": "http://a"}, {
        "PORT": "3005", "CORS_ORIGIN": "http://a.example, http://b.example", "RATE_LIMIT_MAX_REQUESTS": "7",
        "JWT_EXPIRES_IN": "12h"})
    assert settings["aisystant.port"] == 3005
    assert settings["cors.origins"] == ["http://a.example", "http://b.example"]
    assert settings["ratelimit.max_requests"] == 7
    assert settings["jwt.expires_in"] == 12 * 3600


def test_defaults_are_the_original_products():
    settings = load_settings({}, {})
    assert settings["aisystant.port"] == 3001
    assert settings["jwt.expires_in"] == 7 * 86400
    assert settings["aisystant.model"] == "claude-sonnet-4-20250514"
    assert settings["cors.origins"] == ["http://localhost:3000"]


def test_without_database_url_the_embedded_sqlite_file_is_used(tmp_path):
    settings = load_settings({"aisystant.data_dir": str(tmp_path)}, {})
    assert settings["sqlalchemy.url"] == f"sqlite:///{tmp_path}/aisystant.sqlite3"
    assert settings["redis.url"] == ""


@pytest.mark.parametrize("url", ["postgres://u:p@db/x", "postgresql://u:p@db/x"])
def test_original_database_urls_get_our_driver(url):
    assert load_settings({}, {"DATABASE_URL": url})["sqlalchemy.url"] == "postgresql+psycopg2://u:p@db/x"


@pytest.mark.parametrize("value, seconds", [("7d", 604800), ("30m", 1800), ("45", 45), ("2w", 1209600)])
def test_durations(value, seconds):
    assert as_duration(value) == seconds


@pytest.mark.parametrize("variable, value", [("PORT", "http"), ("JWT_EXPIRES_IN", "soon"),
                                             ("RATE_LIMIT_WINDOW_MS", "1.5"), ("ACCOUNT_CACHE_SECONDS", "5s"),
                                             ("DATABASE_POOL_SIZE", "0"), ("DATABASE_POOL_SIZE", "-1"),
                                             ("DATABASE_PREPARED_STATEMENTS", "ture"), ("TRUST_PROXY", "maybe")])
def test_bad_values_name_the_variable(variable, value):
    with pytest.raises(SettingsError, match=variable):
        load_settings({}, {variable: value})


@pytest.mark.parametrize("secret", ["", "dev-only-secret-change-me-before-production", "short-but-random",
                                    "please-change-me-please-change-me-please"])
def test_production_refuses_a_default_or_short_secret(secret):
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        load_settings({"aisystant.env": "production"}, {"JWT_SECRET": secret})


def test_production_accepts_a_strong_secret():
    assert load_settings({"aisystant.env": "production"}, {"JWT_SECRET": STRONG_SECRET})["jwt.secret"] == STRONG_SECRET


@pytest.mark.parametrize("value, expected", [("true", True), ("On", True), ("1", True), ("false", False),
                                             ("OFF", False), ("0", False), ("no", False)])
def test_booleans(value, expected):
    assert load_settings({}, {"DATABASE_PREPARED_STATEMENTS": value})["sqlalchemy.prepared_statements"] is expected
