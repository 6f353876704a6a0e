import pytest

from aisystant_server.metrics import allowed
from aisystant_server.settings import SettingsError, load_settings


def settings(**environ):
    return load_settings({}, environ)


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("203.0.113.7", False), ("10.0.0.5", False), ("", False), (None, False), ("not an address", False),
])
def test_by_default_only_this_machine_may_scrape(address, expected):
    assert allowed(address, None, settings()) is expected


def test_metrics_allow_names_the_networks_that_may_scrape():
    configured = settings(METRICS_ALLOW="10.0.0.0/8 192.0.2.4")
    assert allowed("10.1.2.3", None, configured) and allowed("192.0.2.4", None, configured)
    assert not allowed("127.0.0.1", None, configured) and not allowed("192.0.2.5", None, configured)


def test_the_metrics_token_lets_any_address_scrape():
    configured = settings(METRICS_TOKEN="s3cret-scrape-token")
    assert allowed("203.0.113.7", "Bearer s3cret-scrape-token", configured)
    assert allowed("203.0.113.7", "bearer  s3cret-scrape-token ", configured)
    assert not allowed("203.0.113.7", "Bearer wrong", configured)
    assert not allowed("203.0.113.7", "Basic s3cret-scrape-token", configured)
    assert not allowed("203.0.113.7", None, configured)


def test_without_a_token_no_bearer_lets_a_stranger_in():
    assert not allowed("203.0.113.7", "Bearer ", settings())


def test_a_malformed_allow_list_is_refused():
    with pytest.raises(SettingsError, match="METRICS_ALLOW"):
        settings(METRICS_ALLOW="10.0.0.0/33")
