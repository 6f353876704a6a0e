import json
from dataclasses import dataclass

import pytest
import requests

from aisystant_sdk import Client
from aisystant_sdk.cli.errors import from_api_error
from aisystant_sdk.errors import (
    AisystantError,
    AuthError,
    ConflictError,
    ForbiddenError,
    InvalidCredentialsError,
    ModelFailedError,
    ModelNotConfiguredError,
    NotFoundError,
    PayloadTooLargeError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    UnreachableError,
    ValidationError,
    error_from_code,
    parse_retry_after,
)

URL = "http://aisystant.test:3001"


@dataclass
class Ctx:
    url: str = URL
    token_source: str = "file"
    conversation_id: int | None = None
    attached_chars: int = 0


def response(status, body, headers=None, content_type="application/json"):
    resp = requests.Response()
    resp.status_code = status
    resp._content = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp.headers.update({"Content-Type": content_type, **(headers or {})})
    return resp


@pytest.mark.parametrize(
    "code, status, cls",
    [
        ("unauthorized", 401, AuthError),
        ("invalid_credentials", 401, InvalidCredentialsError),
        ("forbidden", 403, ForbiddenError),
        ("not_found", 404, NotFoundError),
        ("validation_failed", 400, ValidationError),
        ("conflict", 409, ConflictError),
        ("payload_too_large", 413, PayloadTooLargeError),
        ("rate_limited", 429, RateLimitedError),
        ("llm_failed", 502, ModelFailedError),
        ("llm_not_configured", 503, ModelNotConfiguredError),
        ("service_unavailable", 503, ServerError),
        ("internal_error", 500, ServerError),
        ("login_throttled", 429, RateLimitedError),
        ("something_new", 418, AisystantError),
    ],
)
def test_error_class_follows_the_code_then_the_status(code, status, cls):
    error = error_from_code(code, "message", status=status)
    assert type(error) is cls
    assert (error.status, error.code, error.message) == (status, code, "message")


def test_stream_error_event_without_status_maps_by_code():
    assert isinstance(error_from_code("llm_failed", "boom"), ModelFailedError)


def test_every_error_is_an_aisystant_error():
    for cls in (AuthError, NotFoundError, RateLimitedError, ModelNotConfiguredError, UnreachableError):
        assert issubclass(cls, AisystantError)


def test_retry_after_in_seconds_or_as_a_date():
    assert parse_retry_after("42") == 42
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40) == 60
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_client_reads_the_error_envelope():
    body = {"success": False, "code": "rate_limited", "message": "Trop de requêtes", "details": {}}
    error = Client(URL)._error(response(429, body, {"Retry-After": "30"}))
    assert isinstance(error, RateLimitedError)
    assert (error.status, error.retry_after, error.message) == (429, 30, "Trop de requêtes")


def test_client_reads_validation_details():
    body = {"success": False, "code": "validation_failed", "message": "Invalid", "details": {"email": "taken"}}
    error = Client(URL)._error(response(400, body))
    assert isinstance(error, ValidationError)
    assert error.details == {"email": "taken"}


def test_an_html_page_is_a_protocol_error():
    error = Client(URL)._error(response(404, b"<html>nginx</html>", content_type="text/html"))
    assert isinstance(error, ProtocolError)
    assert str(error) == f"the server at {URL} answered 404 with text/html instead of AiSystant's JSON envelope"


def test_a_success_envelope_with_success_false_raises():
    client = Client(URL)
    with pytest.raises(NotFoundError):
        client._envelope(response(200, {"success": False, "code": "not_found", "message": "gone"}))


def test_client_sends_language_and_token():
    client = Client(URL, "tok", language="fr")
    assert client._headers(True) == {"Accept": "application/json", "Accept-Language": "fr, en;q=0.5", "Authorization": "Bearer tok"}
    assert "Authorization" not in client._headers(False)


@pytest.mark.parametrize(
    "lang, header",
    [
        ("fr_FR.UTF-8", "fr-FR, fr;q=0.9, en;q=0.5"),
        ("en_US.UTF-8", "en-US, en;q=0.9"),
        ("C.UTF-8", "en"),
        ("POSIX", "en"),
        ("de_DE@euro", "de-DE, de;q=0.9, en;q=0.5"),
    ],
)
def test_accept_language_follows_the_locale_with_english_as_fallback(monkeypatch, lang, header):
    for name in ("AISYSTANT_LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANGUAGE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", lang)
    assert Client(URL)._headers(False)["Accept-Language"] == header


def test_lc_all_wins_over_lang_and_aisystant_language_over_both(monkeypatch):
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    monkeypatch.setenv("LANG", "fr_FR.UTF-8")
    monkeypatch.setenv("LC_ALL", "en_GB.UTF-8")
    assert Client(URL).language == "en-GB"
    monkeypatch.setenv("AISYSTANT_LANGUAGE", "fr")
    assert Client(URL).language == "fr"
    assert Client(URL, language="de_AT").language == "de-AT"


def test_client_normalizes_the_url():
    assert Client("localhost:3001/").url == "http://localhost:3001"


def test_client_reads_its_url_and_token_from_the_environment(monkeypatch):
    monkeypatch.setenv("AISYSTANT_URL", "http://env:1")
    monkeypatch.setenv("AISYSTANT_TOKEN", "env-token")
    client = Client()
    assert (client.url, client.token) == ("http://env:1", "env-token")


def test_unreachable_is_raised_after_retrying_reads(closed_url):
    client = Client(closed_url, "tok", retries=1, backoff=0)
    with pytest.raises(UnreachableError) as info:
        client.me()
    assert info.value.status is None
    assert info.value.code == "unreachable"


# -- CLI messages and exit codes ------------------------------------------------------


@pytest.mark.parametrize(
    "error, ctx, exit_code, message",
    [
        (
            UnreachableError("x"),
            Ctx(),
            5,
            f"cannot reach an AiSystant server at {URL}: is it running? (set --url or AISYSTANT_URL)",
        ),
        (
            UnreachableError("x", code="timeout"),
            Ctx(),
            5,
            f"the AiSystant server at {URL} did not answer in time: try again, or check that it is healthy",
        ),
        (
            ProtocolError("answered 404 with text/html", status=404),
            Ctx(),
            5,
            f"cannot reach an AiSystant server at {URL}: what answered there is not AiSystant (HTTP 404); "
            "check --url or AISYSTANT_URL",
        ),
        (
            ProtocolError("the reply stream sent malformed data"),
            Ctx(),
            5,
            f"cannot reach an AiSystant server at {URL}: what answered there is not AiSystant; check --url or AISYSTANT_URL",
        ),
        (
            InvalidCredentialsError("Identifiants invalides", status=401),
            Ctx(token_source="none"),
            3,
            "wrong email or password: check them and run `aisystant login` again",
        ),
        (
            AuthError("Token invalide", status=401),
            Ctx(),
            3,
            f"your session on {URL} has expired or was revoked: run `aisystant login` again",
        ),
        (
            AuthError("Token invalide", status=401),
            Ctx(token_source="env"),
            3,
            f"the server at {URL} refused the token in AISYSTANT_TOKEN (expired or revoked): "
            "set a fresh one, or unset it and run `aisystant login`",
        ),
        (
            NotFoundError("Introuvable", status=404),
            Ctx(conversation_id=42),
            4,
            f"conversation 42 not found on {URL}: see yours with `aisystant conversations list`",
        ),
        (
            ModelNotConfiguredError("Aucun modèle", status=503),
            Ctx(),
            6,
            f"no model is configured on the server at {URL}: ask its administrator to set ANTHROPIC_API_KEY "
            "(your question was kept)",
        ),
        (
            ModelFailedError("upstream overloaded", status=502),
            Ctx(),
            6,
            "the model failed to answer (upstream overloaded): try again in a moment",
        ),
        (RateLimitedError("Trop", status=429, retry_after=42.2), Ctx(), 7, f"rate limited by the server at {URL}: wait 43 seconds and try again"),
        (RateLimitedError("Trop", status=429, retry_after=900), Ctx(), 7, f"rate limited by the server at {URL}: wait 15 minutes and try again"),
        (RateLimitedError("Trop", status=429), Ctx(), 7, f"rate limited by the server at {URL}: wait a little and try again"),
        (
            PayloadTooLargeError("Message too long: at most 100000 characters.", status=413),
            Ctx(attached_chars=61_234),
            1,
            "the message is too large for the server (Message too long: at most 100000 characters): "
            "lower --max-context (61,234 characters were attached) or shorten the question",
        ),
        (
            PayloadTooLargeError("Message too long: at most 100000 characters.", status=413),
            Ctx(),
            1,
            "the message is too large for the server (Message too long: at most 100000 characters): "
            "shorten it; a long log is better piped to `aisystant ask` or given with --file, which --max-context caps",
        ),
        (
            ValidationError("Invalid", status=400, details={"email": "invalid"}),
            Ctx(),
            1,
            "the server refused the request: Invalid (email: invalid)",
        ),
        (ServerError("Erreur interne", status=500), Ctx(), 1, f"the server at {URL} failed (500): Erreur interne"),
    ],
)
def test_api_errors_become_one_line_and_an_exit_code(error, ctx, exit_code, message):
    cli_error = from_api_error(error, ctx)
    assert (cli_error.exit_code, cli_error.message) == (exit_code, message)
    assert "\n" not in cli_error.message
