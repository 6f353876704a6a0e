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


def test_a_scrape_forgets_the_gauges_of_processes_that_are_gone(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from aisystant_server import metrics

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    for pid in (gone, os.getpid()):
        (tmp_path / f"gauge_livesum_{pid}.db").write_bytes(b"")
        (tmp_path / f"counter_{pid}.db").write_bytes(b"")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    metrics._forget_dead_processes()
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [f"counter_{gone}.db", f"counter_{os.getpid()}.db", f"gauge_livesum_{os.getpid()}.db"])
